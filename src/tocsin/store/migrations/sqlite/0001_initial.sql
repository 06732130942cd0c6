-- tocsin schema, version 1 (SQLite). Times are Unix seconds (REAL).

CREATE TABLE clients (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    cloud       TEXT NOT NULL,
    console_url TEXT NOT NULL,
    created_at  REAL NOT NULL
);

CREATE TABLE users (
    id         INTEGER PRIMARY KEY,
    client_id  INTEGER NOT NULL REFERENCES clients (id),
    email      TEXT NOT NULL,
    name       TEXT NOT NULL,
    role       TEXT NOT NULL,
    created_at REAL NOT NULL,
    UNIQUE (client_id, email)
);

-- token_hash: HMAC-SHA256 of the token under a key derived from the secret key.
CREATE TABLE tokens (
    id         INTEGER PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users (id),
    token_hash TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL,
    expires_at REAL,
    revoked_at REAL
);

-- settings: the JSON of WebhookSettings without `enabled`, which is a column.
CREATE TABLE integrations (
    id              INTEGER PRIMARY KEY,
    client_id       INTEGER NOT NULL REFERENCES clients (id),
    type            TEXT NOT NULL DEFAULT 'webhook',
    settings        TEXT NOT NULL,
    enabled         INTEGER NOT NULL,
    auto_disabled   INTEGER NOT NULL DEFAULT 0,
    disabled_reason TEXT,
    last_error      TEXT,
    signing_secret  TEXT NOT NULL,  -- encrypted (crypto.Vault), as are header values in settings
    previous_signing_secret TEXT,   -- still signed with for 24 h after a rotation
    secret_rotated_at REAL,
    enabled_at      REAL NOT NULL,  -- the auto-disable rule counts requests from here
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL,
    deleted_at      REAL
);
CREATE INDEX integrations_client ON integrations (client_id) WHERE deleted_at IS NULL;

-- Events are stored in groups (store/grouping.py): consecutive events of one ingest
-- call with the same routing, as their notifications joined by newlines. A hit keeps
-- every field the sensor sent inside its notification. notify = 0: stored, never sent.
CREATE TABLE events (
    id            INTEGER PRIMARY KEY,
    client_id     INTEGER NOT NULL,
    type          TEXT NOT NULL,
    count         INTEGER NOT NULL,
    notify        INTEGER NOT NULL,
    notifications BLOB NOT NULL,
    created_at    REAL NOT NULL
);
CREATE INDEX events_client_time ON events (client_id, created_at);

-- A group of notifications accepted for an integration and not yet in a delivery.
CREATE TABLE outbox (
    id             INTEGER PRIMARY KEY,
    integration_id INTEGER NOT NULL,
    event_id       INTEGER NOT NULL,
    count          INTEGER NOT NULL
);
CREATE INDEX outbox_integration ON outbox (integration_id, id);

CREATE TABLE deliveries (
    id                 INTEGER PRIMARY KEY,
    webhook_id         TEXT NOT NULL UNIQUE,
    integration_id     INTEGER NOT NULL,
    client_id          INTEGER NOT NULL,
    status             TEXT NOT NULL,
    notification_count INTEGER NOT NULL,
    body               BLOB NOT NULL,
    attempt_count      INTEGER NOT NULL DEFAULT 0,
    failures           INTEGER NOT NULL DEFAULT 0,
    next_attempt_at    REAL,
    lease_owner        TEXT,
    lease_until        REAL,
    last_error         TEXT,
    created_at         REAL NOT NULL,
    updated_at         REAL NOT NULL
);
-- The small index of waiting work: only pending and retrying rows are in it.
CREATE INDEX deliveries_waiting ON deliveries (next_attempt_at)
    WHERE status IN ('pending', 'retrying');
CREATE INDEX deliveries_integration ON deliveries (integration_id, id);

CREATE TABLE attempts (
    id             INTEGER PRIMARY KEY,
    delivery_id    INTEGER NOT NULL,
    integration_id INTEGER NOT NULL,
    number         INTEGER NOT NULL,
    started_at     REAL NOT NULL,
    duration_ms    REAL NOT NULL,
    ok             INTEGER NOT NULL,
    status_code    INTEGER,
    error          TEXT,
    response_body  TEXT,
    request_size   INTEGER NOT NULL
);
CREATE INDEX attempts_delivery ON attempts (delivery_id, number);
CREATE INDEX attempts_integration_time ON attempts (integration_id, started_at);
