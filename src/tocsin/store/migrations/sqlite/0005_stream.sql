-- The event stream (docs/architecture.md, "The event stream"): each stored group keeps
-- its events' facts (the structured keys triggers read), one compact JSON object a line;
-- groups stored before this version have none (x'').
ALTER TABLE events ADD COLUMN facts BLOB NOT NULL DEFAULT x'';

-- A consumer of the stream: how far it has read (an events id) and its own state, both
-- written in the transaction that acts on what it read.
CREATE TABLE consumers (
    name       TEXT PRIMARY KEY,
    position   INTEGER NOT NULL DEFAULT 0,
    state      BLOB NOT NULL DEFAULT x'',
    updated_at REAL NOT NULL DEFAULT 0
);
