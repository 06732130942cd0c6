-- Every statement the PostgreSQL store runs, each under a `-- name:` header.
--
-- Locks on integration rows keep processes out of each other's way (store/postgres.py):
-- changes of settings and state take FOR UPDATE; ingestion and claims take FOR KEY SHARE
-- (claims with SKIP LOCKED, so they never wait); recording attempts takes FOR NO KEY
-- UPDATE, which does not hold up ingestion or claims.

-- name: lock_migrations
-- One process migrates at a time; the others wait, then find nothing left to do.
SELECT pg_advisory_xact_lock(7308604897068083568);

-- name: ping
SELECT 1;

-- name: schema_versions
SELECT version FROM schema_migrations ORDER BY version;

-- name: create_schema_migrations
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    applied_at double precision NOT NULL
);

-- name: insert_schema_version
INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2);

-- name: lock_bootstrap
-- Two processes starting on an empty database create one first client between them.
SELECT pg_advisory_xact_lock(7308604897068083569);

-- name: count_clients
SELECT count(*) FROM clients;

-- name: insert_client
INSERT INTO clients (name, cloud, console_url, created_at) VALUES ($1, $2, $3, $4) RETURNING id;

-- name: insert_user
INSERT INTO users (client_id, email, name, role, created_at) VALUES ($1, $2, $3, $4, $5)
RETURNING id, client_id, email, name, role, created_at;

-- name: insert_token
INSERT INTO tokens (user_id, token_hash, created_at) VALUES ($1, $2, $3);

-- name: principal_by_token
SELECT c.id, c.name, c.cloud, c.console_url, u.id, u.email, u.role, t.id, u.name, t.expires_at
FROM tokens t JOIN users u ON u.id = t.user_id JOIN clients c ON c.id = u.client_id
WHERE t.token_hash = ANY($1::text[]) AND t.revoked_at IS NULL
  AND (t.expires_at IS NULL OR t.expires_at > $2)
LIMIT 1;

-- name: client_by_id
SELECT id, name, cloud, console_url FROM clients WHERE id = $1;

-- name: all_clients
SELECT id, name, cloud, console_url FROM clients ORDER BY id;

-- name: update_client
UPDATE clients SET name = $2, cloud = $3, console_url = $4 WHERE id = $1
RETURNING id, name, cloud, console_url;

-- name: lock_client
-- Orders a client's account changes that must see each other: the last administrator
-- (set_role, delete_user), application ids (highest + 1) and unexpired denylist
-- entries; and its integration changes, whose audit ingests lock the client's other
-- integrations FOR KEY SHARE (taken first, so two changes never deadlock). NO KEY UPDATE leaves out the KEY SHARE locks that inserts referencing the
-- client take, so ingestion and integration changes never wait for it.
SELECT id FROM clients WHERE id = $1 FOR NO KEY UPDATE;

-- name: users_of_client
SELECT id, client_id, email, name, role, created_at FROM users WHERE client_id = $1
ORDER BY id;

-- name: user_by_id
SELECT id, client_id, email, name, role, created_at FROM users
WHERE id = $2 AND client_id = $1;

-- name: count_administrators
SELECT count(*) FROM users WHERE client_id = $1 AND role = 'administrator';

-- name: set_role
UPDATE users SET role = $3 WHERE id = $2 AND client_id = $1
RETURNING id, client_id, email, name, role, created_at;

-- name: delete_tokens_of_user
DELETE FROM tokens WHERE user_id = $1;

-- name: delete_user
DELETE FROM users WHERE id = $2 AND client_id = $1;

-- name: insert_named_token
-- FOR KEY SHARE: a user deleted meanwhile is not found (rather than failing the insert).
WITH holder AS (SELECT id FROM users WHERE id = $2 AND client_id = $1 FOR KEY SHARE)
INSERT INTO tokens (user_id, name, token_hash, expires_at, created_at)
SELECT holder.id, $3, $4, $5, $6 FROM holder
RETURNING id, user_id, name, created_at, expires_at, revoked_at;

-- name: tokens_of_client
SELECT t.id, t.user_id, t.name, t.created_at, t.expires_at, t.revoked_at
FROM tokens t JOIN users u ON u.id = t.user_id
WHERE u.client_id = $1 ORDER BY t.id;

-- name: revoke_token
-- Revoking again keeps the first time.
UPDATE tokens t SET revoked_at = coalesce(t.revoked_at, $3)
FROM users u
WHERE t.id = $2 AND u.id = t.user_id AND u.client_id = $1
RETURNING t.id, t.user_id, t.name, t.created_at, t.expires_at, t.revoked_at;

-- name: next_application_id
SELECT coalesce(max(id), 0) + 1 FROM applications WHERE client_id = $1;

-- name: insert_application
INSERT INTO applications (client_id, id, name, created_at, updated_at)
VALUES ($1, $2, $3, $4, $4)
RETURNING client_id, id, name, created_at, updated_at;

-- name: applications_of_client
SELECT client_id, id, name, created_at, updated_at FROM applications WHERE client_id = $1
ORDER BY id;

-- name: application_by_id
SELECT client_id, id, name, created_at, updated_at FROM applications
WHERE client_id = $1 AND id = $2;

-- name: rename_application
UPDATE applications SET name = $3, updated_at = $4 WHERE client_id = $1 AND id = $2
RETURNING client_id, id, name, created_at, updated_at;

-- name: delete_application
DELETE FROM applications WHERE client_id = $1 AND id = $2
RETURNING client_id, id, name, created_at, updated_at;

-- name: unexpired_denylist_entry
SELECT * FROM denylist
WHERE client_id = $1 AND expire_at > $4 AND ip = $2 AND application IS NOT DISTINCT FROM $3
ORDER BY id LIMIT 1;

-- name: insert_denylist
INSERT INTO denylist (client_id, ip, reason, application, created_at, expire_at, created_by)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING *;

-- name: denylist_of_client
SELECT * FROM denylist WHERE client_id = $1 AND expire_at > $2 ORDER BY id;

-- name: delete_denylist
DELETE FROM denylist WHERE id = $2 AND client_id = $1 AND expire_at > $3
RETURNING *;

-- name: stats_queue
-- Run in one read-only snapshot with stats_integrations.
SELECT
    (SELECT coalesce(sum(count), 0) FROM outbox)::bigint
        + (SELECT coalesce(sum(notification_count), 0) FROM deliveries
           WHERE status IN ('pending', 'retrying'))::bigint AS queued_notifications,
    (SELECT count(*) FROM deliveries WHERE status IN ('pending', 'retrying'))
        AS waiting_deliveries;

-- name: stats_integrations
-- The rule of Integration.status (models.py).
SELECT CASE WHEN NOT enabled AND auto_disabled THEN 'auto_disabled'
            WHEN NOT enabled THEN 'disabled'
            WHEN last_error IS NOT NULL THEN 'failing'
            ELSE 'active' END AS status,
    count(*) AS count
FROM integrations WHERE deleted_at IS NULL
GROUP BY 1;

-- name: insert_integration
INSERT INTO integrations (client_id, settings, enabled, signing_secret, enabled_at, created_at,
    updated_at)
VALUES ($1, $2, $3, $4, $5, $5, $5)
RETURNING *;

-- name: integration_by_id
SELECT * FROM integrations WHERE id = $1 AND client_id = $2 AND deleted_at IS NULL;

-- name: lock_integration
-- Before changing an integration's settings or state: waits for ingestion and claims
-- that hold it, and keeps new ones out until the change commits.
SELECT * FROM integrations WHERE id = $1 AND client_id = $2 AND deleted_at IS NULL FOR UPDATE;

-- name: integration_for_resend
SELECT * FROM integrations WHERE id = $1 AND client_id = $2 AND deleted_at IS NULL
FOR KEY SHARE;

-- name: integrations_of_client
SELECT * FROM integrations WHERE client_id = $1 AND deleted_at IS NULL ORDER BY id;

-- name: enabled_integrations_of_client
-- Held until the ingest commits, so that a concurrent disable waits for it and then
-- cancels what it queued (or, committed first, is seen here and gets nothing queued).
SELECT * FROM integrations WHERE client_id = $1 AND deleted_at IS NULL AND enabled
ORDER BY id FOR KEY SHARE;

-- name: update_integration_settings
-- Turning `enabled` on here is the same as the enable call: a fresh start.
UPDATE integrations SET settings = $3, updated_at = $5,
    enabled_at = CASE WHEN $4 AND NOT enabled THEN $5 ELSE enabled_at END,
    last_error = CASE WHEN $4 AND NOT enabled THEN NULL ELSE last_error END,
    auto_disabled = CASE WHEN $4 THEN false ELSE auto_disabled END,
    disabled_reason = CASE WHEN $4 THEN NULL ELSE disabled_reason END,
    enabled = $4
WHERE id = $1 AND client_id = $2 AND deleted_at IS NULL
RETURNING *;

-- name: enable_integration
UPDATE integrations SET enabled = true, auto_disabled = false, disabled_reason = NULL,
    last_error = NULL, updated_at = $3,
    enabled_at = CASE WHEN enabled THEN enabled_at ELSE $3 END
WHERE id = $1 AND client_id = $2 AND deleted_at IS NULL
RETURNING *;

-- name: disable_integration
UPDATE integrations SET enabled = false, auto_disabled = false, disabled_reason = $4,
    updated_at = $3
WHERE id = $1 AND client_id = $2 AND deleted_at IS NULL
RETURNING *;

-- name: delete_integration
UPDATE integrations SET enabled = false, deleted_at = $3, updated_at = $3
WHERE id = $1 AND client_id = $2 AND deleted_at IS NULL;

-- name: set_integration_error
-- Unchanged errors are not written: a steady stream of successes locks nothing.
UPDATE integrations SET last_error = $2 WHERE id = $1 AND last_error IS DISTINCT FROM $2;

-- name: cancel_waiting_deliveries
UPDATE deliveries SET status = 'cancelled', next_attempt_at = NULL, updated_at = $2
WHERE integration_id = $1 AND status IN ('pending', 'retrying');

-- name: count_outbox
SELECT coalesce(sum(count), 0) FROM outbox WHERE integration_id = $1;

-- name: admit_hits
-- sampling.admit for a batch: $3 keys, each with $4 identical hits, arriving at $2.
-- A window opens with the first hit of its kind and lasts $6 seconds; within it at
-- most $5 hits are admitted. Keys in order, so concurrent ingests lock rows alike.
INSERT INTO hit_samples AS s (client_id, key, started_at, count, admitted)
SELECT $1, k.key, $2, least(k.hits, $5), least(k.hits, $5)
FROM unnest($3::bigint[], $4::integer[]) AS k (key, hits)
ORDER BY k.key
ON CONFLICT (client_id, key) DO UPDATE SET
    started_at = CASE WHEN $2 - s.started_at >= $6 THEN $2 ELSE s.started_at END,
    count = CASE WHEN $2 - s.started_at >= $6 THEN excluded.count
                 ELSE s.count + greatest(0, least(excluded.count, $5 - s.count)) END,
    admitted = CASE WHEN $2 - s.started_at >= $6 THEN excluded.count
                    ELSE greatest(0, least(excluded.count, $5 - s.count)) END
RETURNING key, admitted;

-- name: prune_hit_samples
-- Windows that have ended count for nothing: the next such hit opens a new one.
DELETE FROM hit_samples WHERE started_at <= $1::double precision - $2::double precision;

-- name: next_event_ids
SELECT nextval(pg_get_serial_sequence('events', 'id')) FROM generate_series(1, $1);

-- name: insert_events
INSERT INTO events (id, client_id, type, count, notify, notifications, facts, created_at)
SELECT g.id, $1, g.type, g.count, g.notify, g.notifications, g.facts, $2
FROM unnest($3::bigint[], $4::text[], $5::integer[], $6::boolean[], $7::bytea[], $8::bytea[])
    AS g (id, type, count, notify, notifications, facts);

-- name: insert_outbox
INSERT INTO outbox (integration_id, event_id, count)
SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::integer[]);

-- name: notify_work
-- Delivered to the listeners when the ingest commits (and not at all if it rolls back).
NOTIFY tocsin_work;

-- name: due_deliveries
-- Walks the partial index of waiting deliveries; rows another process holds are skipped.
SELECT * FROM deliveries
WHERE status IN ('pending', 'retrying') AND next_attempt_at <= $1
  AND (lease_until IS NULL OR lease_until <= $1)
  AND integration_id <> ALL($2::bigint[])
ORDER BY next_attempt_at LIMIT $3
FOR UPDATE SKIP LOCKED;

-- name: lease_deliveries
UPDATE deliveries AS d SET lease_owner = $1, lease_until = x.until
FROM unnest($2::bigint[], $3::double precision[]) AS x (id, until)
WHERE d.id = x.id;

-- name: integrations_by_ids
SELECT * FROM integrations WHERE id = ANY($1::bigint[]);

-- name: outbox_integrations
-- Hops from one integration id to the next in the index instead of scanning every row.
WITH RECURSIVE ids (i) AS (
    (SELECT integration_id FROM outbox ORDER BY integration_id LIMIT 1)
    UNION ALL
    SELECT (SELECT integration_id FROM outbox WHERE integration_id > ids.i
            ORDER BY integration_id LIMIT 1)
    FROM ids WHERE ids.i IS NOT NULL
)
SELECT i FROM ids WHERE i IS NOT NULL;

-- name: integration_for_claim
-- Skipped while a change of its settings or state holds it: claimed at the next wake-up.
SELECT * FROM integrations WHERE id = $1 AND enabled AND deleted_at IS NULL
FOR KEY SHARE SKIP LOCKED;

-- name: outbox_counts
-- Not locked: how many of the oldest groups a claim's deliveries take, read from up to
-- $2 of them; outbox_batch then locks just that many.
SELECT count FROM outbox WHERE integration_id = $1 ORDER BY id LIMIT $2;

-- name: outbox_batch
-- Counts only: the notifications of the groups that fit are read as they are taken.
SELECT id, count FROM outbox WHERE integration_id = $1 ORDER BY id LIMIT $2
FOR UPDATE SKIP LOCKED;

-- name: take_outbox
DELETE FROM outbox o USING events e
WHERE o.id = ANY($1::bigint[]) AND e.id = o.event_id
RETURNING o.id, e.notifications;

-- name: insert_deliveries
-- One row per element of the arrays $1 (webhook ids), $5 (counts) and $6 (bodies), in
-- order: ids are drawn from the sequence as the rows are read.
INSERT INTO deliveries (webhook_id, integration_id, client_id, status, notification_count, body,
    next_attempt_at, lease_owner, lease_until, created_at, updated_at)
SELECT made.webhook_id, $2::bigint, $3::bigint, $4::text, made.count, made.body,
    $7::double precision, $8::text, $9::double precision, $10::double precision, $10
FROM unnest($1::text[], $5::integer[], $6::bytea[]) AS made (webhook_id, count, body)
RETURNING *;

-- name: lock_integrations_for_records
-- Attempts of one integration are recorded one transaction at a time, so that the
-- auto-disable rule always counts every committed attempt.
SELECT id FROM integrations WHERE id = ANY($1::bigint[]) ORDER BY id FOR NO KEY UPDATE;

-- name: record_attempt
-- One attempt: the delivery's new attempt count numbers it. A delivery cancelled while
-- its request was in flight stays cancelled unless that request succeeded.
WITH finished AS (
    UPDATE deliveries SET
        status = CASE WHEN status = 'cancelled' AND $3 <> 'delivered' THEN 'cancelled'
                      ELSE $3 END,
        next_attempt_at = CASE WHEN status = 'cancelled' AND $3 <> 'delivered' THEN NULL
                               ELSE $4::double precision END,
        attempt_count = attempt_count + 1,
        failures = failures + CASE WHEN $7 THEN 0 ELSE 1 END,
        last_error = $9,
        lease_owner = NULL, lease_until = NULL, updated_at = $12
    WHERE id = $1
    RETURNING attempt_count
)
INSERT INTO attempts (delivery_id, integration_id, number, started_at, duration_ms, ok,
    status_code, error, response_body, request_size)
SELECT $1, $2, finished.attempt_count, $5, $6, $7, $8, $9, $10, $11 FROM finished;

-- name: attempt_stats
SELECT count(*), count(*) FILTER (WHERE NOT ok) FROM attempts
WHERE integration_id = $1 AND started_at >= $2;

-- name: integration_by_id_any_client
SELECT * FROM integrations WHERE id = $1;

-- name: lock_integration_any_client
SELECT * FROM integrations WHERE id = $1 FOR UPDATE;

-- name: auto_disable_integration
UPDATE integrations SET enabled = false, auto_disabled = true, disabled_reason = $2,
    updated_at = $3
WHERE id = $1 AND enabled AND deleted_at IS NULL
RETURNING *;

-- name: next_due
SELECT min(coalesce(lease_until, next_attempt_at)) FROM deliveries
WHERE status IN ('pending', 'retrying');

-- name: deliveries_page
SELECT * FROM deliveries
WHERE client_id = $1 AND integration_id = $2 AND id < $3
ORDER BY id DESC LIMIT $4;

-- name: delivery_of_client
SELECT * FROM deliveries WHERE id = $1 AND client_id = $2;

-- name: attempts_of_deliveries
SELECT delivery_id, number, started_at, duration_ms, status_code, error, response_body,
    request_size
FROM attempts WHERE delivery_id = ANY($1::bigint[]) ORDER BY delivery_id, number;

-- name: requeue_delivery
-- Only from failed or cancelled: of two concurrent re-sends, one queues it.
UPDATE deliveries SET status = 'pending', failures = 0, next_attempt_at = $2,
    lease_owner = NULL, lease_until = NULL, updated_at = $2
WHERE id = $1 AND status IN ('failed', 'cancelled')
RETURNING *;

-- name: rotate_signing_secret
UPDATE integrations SET previous_signing_secret = signing_secret, signing_secret = $3,
    secret_rotated_at = $4, updated_at = $4
WHERE id = $1 AND client_id = $2 AND deleted_at IS NULL
RETURNING *;

-- name: all_integration_secrets
SELECT id, settings, signing_secret, previous_signing_secret FROM integrations ORDER BY id
FOR UPDATE;

-- name: store_integration_secrets
UPDATE integrations SET settings = $2, signing_secret = $3, previous_signing_secret = $4
WHERE id = $1;

-- name: turn_of_task
-- A periodic task's turn, locked for this transaction. No row while another process's
-- transaction holds it: that process is doing the task right now, so this one does not.
SELECT holder, ends_at FROM maintenance WHERE task = $1 FOR UPDATE SKIP LOCKED;

-- name: start_turn
UPDATE maintenance SET holder = $2, started_at = $3, ends_at = $4 WHERE task = $1;

-- name: prune_deliveries
-- Finished deliveries last changed before $1, oldest first (the partial index
-- deliveries_finished), with their attempts (attempts_delivery). A row another
-- transaction holds, such as a re-send, is skipped rather than waited for. The ids go
-- through ARRAY(...): deleting `id = ANY (ids)` looks each one up in its index, where
-- a join with the batch could be planned as a scan of the whole table.
WITH old AS (
    SELECT id FROM deliveries
    WHERE status IN ('delivered', 'failed', 'cancelled') AND updated_at < $1
    ORDER BY updated_at LIMIT $2
    FOR UPDATE SKIP LOCKED
), deliveries_gone AS (
    DELETE FROM deliveries WHERE id = ANY (ARRAY(SELECT id FROM old)) RETURNING id
), attempts_gone AS (
    DELETE FROM attempts WHERE delivery_id = ANY (ARRAY(SELECT id FROM deliveries_gone))
    RETURNING id
)
SELECT (SELECT count(*) FROM deliveries_gone) AS deliveries,
    (SELECT count(*) FROM attempts_gone) AS attempts;

-- name: prune_events
-- Events stored before $1, oldest first (events_created). One that an outbox row still
-- refers to is queued work and stays. NOT IN, not NOT EXISTS: the outbox (a queue,
-- nearly always small) is hashed once and each event checked as the index walk goes,
-- which stops after $2 events; an anti join would read every old event, then sort.
WITH gone AS (
    DELETE FROM events WHERE id = ANY (ARRAY(
        SELECT id FROM events
        WHERE created_at < $1 AND id NOT IN (SELECT event_id FROM outbox)
        ORDER BY created_at LIMIT $2
    ))
    RETURNING id
)
SELECT count(*) FROM gone;

-- name: prune_denylist
-- Entries that expired before $1 (denylist_expire); unexpired ones are never touched.
WITH gone AS (
    DELETE FROM denylist WHERE id = ANY (ARRAY(
        SELECT id FROM denylist WHERE expire_at < $1 ORDER BY expire_at LIMIT $2
    ))
    RETURNING id
)
SELECT count(*) FROM gone;

-- name: insert_trigger
INSERT INTO triggers (client_id, name, comment, enabled, condition, definition, created_at,
                      updated_at, counting_since)
VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $7)
RETURNING id, client_id, name, comment, enabled, condition, definition, created_at,
          updated_at, counting_since;

-- name: triggers_of_client
SELECT id, client_id, name, comment, enabled, condition, definition, created_at, updated_at,
       counting_since
FROM triggers WHERE client_id = $1 ORDER BY id;

-- name: trigger_of_client
SELECT id, client_id, name, comment, enabled, condition, definition, created_at, updated_at,
       counting_since
FROM triggers WHERE client_id = $1 AND id = $2;

-- name: trigger_for_update
SELECT id, client_id, name, comment, enabled, condition, definition, created_at, updated_at,
       counting_since
FROM triggers WHERE client_id = $1 AND id = $2 FOR UPDATE;

-- name: all_triggers
SELECT id, client_id, name, comment, enabled, condition, definition, created_at, updated_at,
       counting_since
FROM triggers ORDER BY id;

-- name: update_trigger
UPDATE triggers SET name = $3, comment = $4, enabled = $5, condition = $6, definition = $7,
    updated_at = $8, counting_since = $9
WHERE client_id = $1 AND id = $2
RETURNING id, client_id, name, comment, enabled, condition, definition, created_at,
          updated_at, counting_since;

-- name: delete_trigger
DELETE FROM triggers WHERE client_id = $1 AND id = $2
RETURNING id, client_id, name, comment, enabled, condition, definition, created_at,
          updated_at, counting_since;

-- the event stream ---------------------------------------------------------------

-- name: add_consumer
INSERT INTO consumers (name) VALUES ($1) ON CONFLICT (name) DO NOTHING;

-- name: take_consumer
-- Held until the transaction ends; a consumer another process holds is skipped.
SELECT position_xid::text AS position_xid, position_id, state FROM consumers
WHERE name = $1 FOR UPDATE SKIP LOCKED;

-- name: stream_horizon
-- The oldest transaction of this database still running (other than ours), as a full
-- transaction id: every event group below it has committed or never will. Read in a
-- statement of its own before the groups (whose snapshot is newer), so a transaction
-- that ends between the two is visible to the read. Transactions of other databases on
-- the server do not hold the stream back. (A role sees other roles' transaction ids here
-- only with pg_read_all_stats: tocsin's processes share one role.)
WITH current AS (SELECT pg_current_xact_id()::text::bigint AS xid)
SELECT coalesce(
    min(current.xid - ((current.xid % 4294967296 - a.backend_xid::text::bigint
                        + 4294967296) % 4294967296)),
    current.xid + 1
)::text
FROM current LEFT JOIN pg_stat_activity a
    ON a.datname = current_database() AND a.backend_xid IS NOT NULL
    AND a.pid <> pg_backend_pid()
GROUP BY current.xid;

-- name: stream_after
-- In the order of the inserting transactions, and only below the horizon read just
-- before: nothing can commit later behind the position read to.
SELECT id, xid::text AS xid, client_id, type, count, facts, created_at FROM events
WHERE (xid, id) > ($1::text::xid8, $2::bigint) AND xid < $4::text::xid8
ORDER BY xid, id LIMIT $3;

-- name: move_consumer
UPDATE consumers SET position_xid = $2::text::xid8, position_id = $3, state = $4, updated_at = $5
WHERE name = $1;

-- name: insert_trigger_denylist
-- A trigger's denylisting, unless an unexpired entry for every application has the address.
INSERT INTO denylist (client_id, ip, reason, application, created_at, expire_at, created_by,
                      trigger_id)
SELECT $1, $2, $3, NULL, $4, $5, $6, $7
WHERE NOT EXISTS (
    SELECT 1 FROM denylist
    WHERE client_id = $1 AND ip = $2 AND application IS NULL AND expire_at > $4
)
RETURNING id;
