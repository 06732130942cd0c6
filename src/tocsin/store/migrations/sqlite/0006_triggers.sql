-- tocsin schema, version 6 (SQLite): triggers (SPEC 5), and which trigger made a
-- denylist entry. Only adds.

-- A trigger of one client. `definition` is its filters, threshold and actions as JSON
-- (triggers/definitions.py reads and writes it); counting_since is when its counting
-- definition was last set or it was last enabled (it counts events stored from then).
CREATE TABLE triggers (
    id             INTEGER PRIMARY KEY,
    client_id      INTEGER NOT NULL REFERENCES clients (id),
    name           TEXT NOT NULL,
    comment        TEXT NOT NULL,
    enabled        INTEGER NOT NULL,
    condition      TEXT NOT NULL,
    definition     TEXT NOT NULL,
    created_at     REAL NOT NULL,
    updated_at     REAL NOT NULL,
    counting_since REAL NOT NULL
);
CREATE INDEX triggers_client ON triggers (client_id, id);

-- The trigger whose denylist_ip action made the entry (NULL: added through the API). No
-- foreign key: the entry stays, naming its trigger, after the trigger is deleted.
ALTER TABLE denylist ADD COLUMN trigger_id INTEGER;
