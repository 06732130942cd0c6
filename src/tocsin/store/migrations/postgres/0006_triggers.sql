-- tocsin schema, version 6 (PostgreSQL): triggers (SPEC 5), and which trigger made a
-- denylist entry. Only adds.

-- A trigger of one client. `definition` is its filters, threshold and actions as JSON
-- text (triggers/definitions.py reads and writes it); counting_since is when its
-- counting definition was last set or it was last enabled (it counts events from then).
CREATE TABLE triggers (
    id             bigserial PRIMARY KEY,
    client_id      bigint NOT NULL REFERENCES clients (id),
    name           text NOT NULL,
    comment        text NOT NULL,
    enabled        boolean NOT NULL,
    condition      text NOT NULL,
    definition     text NOT NULL,
    created_at     double precision NOT NULL,
    updated_at     double precision NOT NULL,
    counting_since double precision NOT NULL
);
CREATE INDEX triggers_client ON triggers (client_id, id);

-- The trigger whose denylist_ip action made the entry (NULL: added through the API). No
-- foreign key: the entry stays, naming its trigger, after the trigger is deleted.
ALTER TABLE denylist ADD COLUMN trigger_id bigint;
