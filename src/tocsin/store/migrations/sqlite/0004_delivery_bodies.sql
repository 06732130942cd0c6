-- tocsin schema, version 4 (SQLite): a delivery's body in a table of its own.
--
-- SQLite rewrites a whole row when any of its columns changes size, overflow pages and
-- all: with the body in `deliveries`, recording an attempt (status, lease, counts) wrote
-- the body, up to 500 notifications, to disk once more. Bodies never change; they now
-- sit in `delivery_bodies`, and the rows that change are small. Queued and finished
-- deliveries keep their bodies: every one is copied before the column goes.

CREATE TABLE delivery_bodies (
    delivery_id INTEGER PRIMARY KEY,
    body        BLOB NOT NULL
);
INSERT INTO delivery_bodies (delivery_id, body) SELECT id, body FROM deliveries;
ALTER TABLE deliveries DROP COLUMN body;
