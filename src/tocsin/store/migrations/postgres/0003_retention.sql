-- tocsin schema, version 3 (PostgreSQL): delivery-log retention. Only adds.
-- The indexes are created IF NOT EXISTS: on a large database an operator can build them
-- beforehand with CREATE INDEX CONCURRENTLY under these names (docs/operations.md), so
-- that this migration does not hold up ingestion and delivery while they are built.

-- Periodic tasks that must run in one process at a time, whichever processes are up:
-- one row per task, added by the migration that brings the task. A process takes a
-- task's turn by locking its row (FOR UPDATE SKIP LOCKED) in the transaction that does
-- the work; the turn is `holder`'s until `ends_at`, then the next process to ask gets it.
CREATE TABLE maintenance (
    task       text PRIMARY KEY,
    holder     text,
    started_at double precision NOT NULL DEFAULT 0,
    ends_at    double precision NOT NULL DEFAULT 0
);
INSERT INTO maintenance (task) VALUES ('prune');

-- What retention prunes, oldest first, without reading the rest of the history:
-- finished deliveries by their last change (waiting ones are never in this index),
-- events by age, denylist entries by expiry.
CREATE INDEX IF NOT EXISTS deliveries_finished ON deliveries (updated_at)
    WHERE status IN ('delivered', 'failed', 'cancelled');
CREATE INDEX IF NOT EXISTS events_created ON events (created_at);
CREATE INDEX IF NOT EXISTS denylist_expire ON denylist (expire_at);
