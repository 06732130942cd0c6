-- tocsin schema, version 3 (SQLite): delivery-log retention. Only adds.

-- Periodic tasks that run in one process at a time: one row per task, added by the
-- migration that brings the task. The turn is `holder`'s until `ends_at` (one process
-- writes a SQLite file; the table keeps the stores alike, see store/base.py Turn).
CREATE TABLE maintenance (
    task       TEXT PRIMARY KEY,
    holder     TEXT,
    started_at REAL NOT NULL DEFAULT 0,
    ends_at    REAL NOT NULL DEFAULT 0
);
INSERT INTO maintenance (task) VALUES ('prune');

-- What retention prunes, oldest first, without reading the rest of the history:
-- finished deliveries by their last change (waiting ones are never in this index),
-- events by age, denylist entries by expiry.
CREATE INDEX IF NOT EXISTS deliveries_finished ON deliveries (updated_at)
    WHERE status IN ('delivered', 'failed', 'cancelled');
CREATE INDEX IF NOT EXISTS events_created ON events (created_at);
CREATE INDEX IF NOT EXISTS denylist_expire ON denylist (expire_at);
