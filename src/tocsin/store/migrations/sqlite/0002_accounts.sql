-- tocsin schema, version 2 (SQLite): named tokens, applications and the IP denylist.
-- Only adds: the clients, users, integrations and queued work of version 1 are kept as they are.

ALTER TABLE tokens ADD COLUMN name TEXT NOT NULL DEFAULT '';

-- An application's id is chosen per client (hits and triggers refer to it by id).
CREATE TABLE applications (
    client_id  INTEGER NOT NULL REFERENCES clients (id),
    id         INTEGER NOT NULL,
    name       TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (client_id, id)
);

-- application NULL: the address is denied for every application of the client.
-- Expired rows stay (they are never listed) until someone prunes them.
CREATE TABLE denylist (
    id          INTEGER PRIMARY KEY,
    client_id   INTEGER NOT NULL REFERENCES clients (id),
    ip          TEXT NOT NULL,
    reason      TEXT NOT NULL,
    application INTEGER,
    created_at  REAL NOT NULL,
    expire_at   REAL NOT NULL,
    created_by  TEXT NOT NULL
);
CREATE INDEX denylist_client_expiry ON denylist (client_id, expire_at);
