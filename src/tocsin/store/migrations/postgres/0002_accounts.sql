-- tocsin schema, version 2 (PostgreSQL): token names, applications and the IP denylist.
-- Times are Unix seconds (double precision), as in version 1.

ALTER TABLE tokens ADD COLUMN name text NOT NULL DEFAULT '';
-- A client's tokens are listed through its users; a user's are deleted with it.
CREATE INDEX tokens_user ON tokens (user_id);

-- Hits and triggers name an application by its id, which the client chooses (or
-- which is the client's highest + 1): unique per client, not across clients.
CREATE TABLE applications (
    client_id  bigint NOT NULL REFERENCES clients (id),
    id         bigint NOT NULL,
    name       text NOT NULL,
    created_at double precision NOT NULL,
    updated_at double precision NOT NULL,
    PRIMARY KEY (client_id, id)
);

-- An address denied until expire_at; application NULL: every application of the client.
-- Expired rows stay (they are history) and are never listed: the index serves
-- "the client's entries with expire_at > now".
CREATE TABLE denylist (
    id          bigserial PRIMARY KEY,
    client_id   bigint NOT NULL REFERENCES clients (id),
    ip          text NOT NULL,
    reason      text NOT NULL,
    application bigint,
    created_at  double precision NOT NULL,
    expire_at   double precision NOT NULL,
    created_by  text NOT NULL
);
CREATE INDEX denylist_client_expire ON denylist (client_id, expire_at);
