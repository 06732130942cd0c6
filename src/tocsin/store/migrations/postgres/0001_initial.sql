-- tocsin schema, version 1 (PostgreSQL). Times are Unix seconds (double precision).
-- The same tables as the SQLite schema, plus hit_samples: with several processes
-- sharing the database, sampling windows are counted here rather than in memory.

CREATE TABLE clients (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL,
    cloud       text NOT NULL,
    console_url text NOT NULL,
    created_at  double precision NOT NULL
);

CREATE TABLE users (
    id         bigserial PRIMARY KEY,
    client_id  bigint NOT NULL REFERENCES clients (id),
    email      text NOT NULL,
    name       text NOT NULL,
    role       text NOT NULL,
    created_at double precision NOT NULL,
    UNIQUE (client_id, email)
);

-- token_hash: HMAC-SHA256 of the token under a key derived from the secret key.
CREATE TABLE tokens (
    id         bigserial PRIMARY KEY,
    user_id    bigint NOT NULL REFERENCES users (id),
    token_hash text NOT NULL UNIQUE,
    created_at double precision NOT NULL,
    expires_at double precision,
    revoked_at double precision
);

-- settings: the JSON of WebhookSettings without `enabled`, which is a column.
-- Updated often (last_error): room on each page keeps those updates HOT.
CREATE TABLE integrations (
    id              bigserial PRIMARY KEY,
    client_id       bigint NOT NULL REFERENCES clients (id),
    type            text NOT NULL DEFAULT 'webhook',
    settings        text NOT NULL,
    enabled         boolean NOT NULL,
    auto_disabled   boolean NOT NULL DEFAULT false,
    disabled_reason text,
    last_error      text,
    signing_secret  text NOT NULL,  -- encrypted (crypto.Vault), as are header values in settings
    previous_signing_secret text,   -- still signed with for 24 h after a rotation
    secret_rotated_at double precision,
    enabled_at      double precision NOT NULL,  -- the auto-disable rule counts requests from here
    created_at      double precision NOT NULL,
    updated_at      double precision NOT NULL,
    deleted_at      double precision
) WITH (fillfactor = 70);
CREATE INDEX integrations_client ON integrations (client_id) WHERE deleted_at IS NULL;

-- Events are stored in groups (store/grouping.py): consecutive events of one ingest
-- call with the same routing, as their notifications joined by newlines. A hit keeps
-- every field the sensor sent inside its notification. notify = false: stored, never sent.
CREATE TABLE events (
    id            bigserial PRIMARY KEY,
    client_id     bigint NOT NULL,
    type          text NOT NULL,
    count         integer NOT NULL,
    notify        boolean NOT NULL,
    notifications bytea NOT NULL,
    created_at    double precision NOT NULL
);
CREATE INDEX events_client_time ON events (client_id, created_at);

-- A group of notifications accepted for an integration and not yet in a delivery.
-- A queue: rows are inserted and soon deleted, so autovacuum visits it by dead rows
-- counted absolutely, not as a fraction of a table that is nearly always small.
CREATE TABLE outbox (
    id             bigserial PRIMARY KEY,
    integration_id bigint NOT NULL,
    event_id       bigint NOT NULL,
    count          integer NOT NULL
) WITH (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 5000,
    autovacuum_vacuum_cost_delay = 0
);
CREATE INDEX outbox_integration ON outbox (integration_id, id);

-- Leases and retries update rows in place: free room on each page keeps the lease
-- updates HOT, and autovacuum keeps up with the churn of the waiting rows.
CREATE TABLE deliveries (
    id                 bigserial PRIMARY KEY,
    webhook_id         text NOT NULL UNIQUE,
    integration_id     bigint NOT NULL,
    client_id          bigint NOT NULL,
    status             text NOT NULL,
    notification_count integer NOT NULL,
    body               bytea NOT NULL,
    attempt_count      integer NOT NULL DEFAULT 0,
    failures           integer NOT NULL DEFAULT 0,
    next_attempt_at    double precision,
    lease_owner        text,
    lease_until        double precision,
    last_error         text,
    created_at         double precision NOT NULL,
    updated_at         double precision NOT NULL
) WITH (
    fillfactor = 80,
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 0
);
-- The small index of waiting work: only pending and retrying rows are in it.
CREATE INDEX deliveries_waiting ON deliveries (next_attempt_at)
    WHERE status IN ('pending', 'retrying');
CREATE INDEX deliveries_integration ON deliveries (integration_id, id);

CREATE TABLE attempts (
    id             bigserial PRIMARY KEY,
    delivery_id    bigint NOT NULL,
    integration_id bigint NOT NULL,
    number         integer NOT NULL,
    started_at     double precision NOT NULL,
    duration_ms    double precision NOT NULL,
    ok             boolean NOT NULL,
    status_code    integer,
    error          text,
    response_body  text,
    request_size   integer NOT NULL
);
CREATE INDEX attempts_delivery ON attempts (delivery_id, number);
CREATE INDEX attempts_integration_time ON attempts (integration_id, started_at);

-- Hit sampling windows (sampling.admit, counted in the database so that every
-- process sees one count): `key` is formats.sample_key, a signed 64-bit digest.
-- `admitted` is how many hits the last ingest of this key let through: RETURNING
-- sees only the row after an upsert, so the upsert writes its answer here.
CREATE TABLE hit_samples (
    client_id  bigint NOT NULL,
    key        bigint NOT NULL,
    started_at double precision NOT NULL,
    count      integer NOT NULL,
    admitted   integer NOT NULL,
    PRIMARY KEY (client_id, key)
) WITH (fillfactor = 80, autovacuum_vacuum_scale_factor = 0.05);
CREATE INDEX hit_samples_started ON hit_samples (started_at);
