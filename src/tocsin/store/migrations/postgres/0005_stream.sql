-- The event stream (docs/architecture.md, "The event stream"): each stored group keeps
-- its events' facts (the structured keys triggers read), one compact JSON object a line;
-- groups stored before this version have none.
ALTER TABLE events ADD COLUMN facts bytea NOT NULL DEFAULT ''::bytea;

-- Ids come from a sequence and commit out of order, so consumers read in the order of
-- the inserting transaction's id, and only below the oldest transaction of this database
-- still running (see the stream_horizon query):
-- nothing can appear later behind a consumer's position. Rows stored before this
-- version get 0 (a constant default rewrites nothing), new rows their transaction's id.
ALTER TABLE events ADD COLUMN xid xid8 NOT NULL DEFAULT '0';
ALTER TABLE events ALTER COLUMN xid SET DEFAULT pg_current_xact_id();
CREATE INDEX events_stream ON events (xid, id);

-- A consumer of the stream: how far it has read and its own state, both written in the
-- transaction that acts on what it read; its row is locked (SKIP LOCKED) while it reads,
-- so two processes never consume the same events.
CREATE TABLE consumers (
    name         text PRIMARY KEY,
    position_xid xid8 NOT NULL DEFAULT '0',
    position_id  bigint NOT NULL DEFAULT 0,
    state        bytea NOT NULL DEFAULT ''::bytea,
    updated_at   double precision NOT NULL DEFAULT 0
);

DO $$
BEGIN
    ALTER TABLE events ALTER COLUMN facts SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
    RAISE NOTICE 'lz4 is not available on this server; TOAST keeps compressing with pglz';
END
$$;
