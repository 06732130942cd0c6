-- Every statement the SQLite store runs, each under a `-- name:` header.

-- name: schema_versions
SELECT version FROM schema_migrations ORDER BY version;

-- name: create_schema_migrations
CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL);

-- name: insert_schema_version
INSERT INTO schema_migrations (version, applied_at) VALUES (:version, :now);

-- name: count_clients
SELECT count(*) FROM clients;

-- name: insert_client
INSERT INTO clients (name, cloud, console_url, created_at) VALUES (:name, :cloud, :console_url, :now);

-- name: insert_user
INSERT INTO users (client_id, email, name, role, created_at) VALUES (:client_id, :email, :name, :role, :now);

-- name: insert_token
INSERT INTO tokens (user_id, name, token_hash, created_at, expires_at)
VALUES (:user_id, :name, :token_hash, :now, :expires_at);

-- name: principal_by_token
SELECT c.id, c.name, c.cloud, c.console_url, u.id, u.email, u.role, t.id, u.name, t.expires_at
FROM tokens t JOIN users u ON u.id = t.user_id JOIN clients c ON c.id = u.client_id
WHERE t.token_hash IN (SELECT value FROM json_each(:token_hashes)) AND t.revoked_at IS NULL
  AND (t.expires_at IS NULL OR t.expires_at > :now);

-- name: client_by_id
SELECT id, name, cloud, console_url FROM clients WHERE id = :id;

-- name: all_clients
SELECT id, name, cloud, console_url FROM clients ORDER BY id;

-- name: update_client
UPDATE clients SET name = :name, cloud = :cloud, console_url = :console_url WHERE id = :id;

-- name: user_by_email
SELECT id FROM users WHERE client_id = :client_id AND email = :email;

-- name: users_of_client
SELECT id, client_id, email, name, role, created_at FROM users
WHERE client_id = :client_id ORDER BY id;

-- name: user_of_client
SELECT id, client_id, email, name, role, created_at FROM users
WHERE id = :id AND client_id = :client_id;

-- name: other_administrators
SELECT count(*) FROM users
WHERE client_id = :client_id AND role = 'administrator' AND id != :id;

-- name: set_user_role
UPDATE users SET role = :role WHERE id = :id AND client_id = :client_id;

-- name: delete_tokens_of_user
DELETE FROM tokens WHERE user_id = :user_id;

-- name: delete_user
DELETE FROM users WHERE id = :id AND client_id = :client_id;

-- name: token_by_hash
SELECT id FROM tokens WHERE token_hash = :token_hash;

-- name: tokens_of_client
SELECT t.id, t.user_id, t.name, t.created_at, t.expires_at, t.revoked_at
FROM tokens t JOIN users u ON u.id = t.user_id
WHERE u.client_id = :client_id ORDER BY t.id;

-- name: token_of_client
SELECT t.id, t.user_id, t.name, t.created_at, t.expires_at, t.revoked_at
FROM tokens t JOIN users u ON u.id = t.user_id
WHERE t.id = :id AND u.client_id = :client_id;

-- name: revoke_token
-- Idempotent: a token revoked twice keeps the first time.
UPDATE tokens SET revoked_at = coalesce(revoked_at, :now) WHERE id = :id;

-- name: next_application_id
SELECT coalesce(max(id), 0) + 1 FROM applications WHERE client_id = :client_id;

-- name: insert_application
INSERT INTO applications (client_id, id, name, created_at, updated_at)
VALUES (:client_id, :id, :name, :now, :now);

-- name: applications_of_client
SELECT id, client_id, name, created_at, updated_at FROM applications
WHERE client_id = :client_id ORDER BY id;

-- name: application_of_client
SELECT id, client_id, name, created_at, updated_at FROM applications
WHERE client_id = :client_id AND id = :id;

-- name: rename_application
UPDATE applications SET name = :name, updated_at = :now WHERE client_id = :client_id AND id = :id;

-- name: delete_application
DELETE FROM applications WHERE client_id = :client_id AND id = :id;

-- name: denylisted_already
-- `IS` matches a NULL application (every application) to a NULL one.
SELECT id, expire_at FROM denylist
WHERE client_id = :client_id AND ip = :ip AND application IS :application AND expire_at > :now;

-- name: insert_denylist
INSERT INTO denylist (client_id, ip, reason, application, created_at, expire_at, created_by)
VALUES (:client_id, :ip, :reason, :application, :now, :expire_at, :created_by);

-- name: denylist_of_client
SELECT id, client_id, ip, reason, application, created_at, expire_at, created_by, trigger_id
FROM denylist
WHERE client_id = :client_id AND expire_at > :now ORDER BY id;

-- name: denylist_entry
SELECT id, client_id, ip, reason, application, created_at, expire_at, created_by, trigger_id
FROM denylist
WHERE id = :id AND client_id = :client_id AND expire_at > :now;

-- name: delete_denylist
DELETE FROM denylist WHERE id = :id;

-- name: stats_queued
SELECT
    (SELECT coalesce(sum(count), 0) FROM outbox)
    + (SELECT coalesce(sum(notification_count), 0) FROM deliveries
       WHERE status IN ('pending', 'retrying')),
    (SELECT count(*) FROM deliveries WHERE status IN ('pending', 'retrying'));

-- name: stats_integrations
-- The rule of Integration.status (models.py), without decrypting every row.
SELECT CASE
        WHEN NOT enabled AND auto_disabled THEN 'auto_disabled'
        WHEN NOT enabled THEN 'disabled'
        WHEN last_error IS NOT NULL THEN 'failing'
        ELSE 'active'
    END AS status, count(*) AS n
FROM integrations WHERE deleted_at IS NULL GROUP BY 1;

-- name: insert_integration
INSERT INTO integrations (client_id, settings, enabled, signing_secret, enabled_at, created_at, updated_at)
VALUES (:client_id, :settings, :enabled, :signing_secret, :now, :now, :now);

-- name: integration_by_id
SELECT * FROM integrations WHERE id = :id AND client_id = :client_id AND deleted_at IS NULL;

-- name: integrations_of_client
SELECT * FROM integrations WHERE client_id = :client_id AND deleted_at IS NULL ORDER BY id;

-- name: enabled_integrations_of_client
SELECT * FROM integrations WHERE client_id = :client_id AND deleted_at IS NULL AND enabled = 1;

-- name: update_integration_settings
-- Turning `enabled` on here is the same as the enable call: a fresh start.
UPDATE integrations SET settings = :settings, updated_at = :now,
    enabled_at = CASE WHEN :enabled AND NOT enabled THEN :now ELSE enabled_at END,
    last_error = CASE WHEN :enabled AND NOT enabled THEN NULL ELSE last_error END,
    auto_disabled = CASE WHEN :enabled THEN 0 ELSE auto_disabled END,
    disabled_reason = CASE WHEN :enabled THEN NULL ELSE disabled_reason END,
    enabled = :enabled
WHERE id = :id AND client_id = :client_id AND deleted_at IS NULL;

-- name: enable_integration
UPDATE integrations SET enabled = 1, auto_disabled = 0, disabled_reason = NULL,
    last_error = NULL, updated_at = :now,
    enabled_at = CASE WHEN enabled THEN enabled_at ELSE :now END
WHERE id = :id AND client_id = :client_id AND deleted_at IS NULL;

-- name: disable_integration
UPDATE integrations SET enabled = 0, auto_disabled = :auto, disabled_reason = :reason, updated_at = :now
WHERE id = :id AND client_id = :client_id AND deleted_at IS NULL;

-- name: delete_integration
UPDATE integrations SET enabled = 0, deleted_at = :now, updated_at = :now
WHERE id = :id AND client_id = :client_id AND deleted_at IS NULL;

-- name: set_integration_error
UPDATE integrations SET last_error = :error WHERE id = :id;

-- name: cancel_waiting_deliveries
UPDATE deliveries SET status = 'cancelled', next_attempt_at = NULL, updated_at = :now
WHERE integration_id = :integration_id AND status IN ('pending', 'retrying');

-- name: count_outbox
SELECT coalesce(sum(count), 0) FROM outbox WHERE integration_id = :integration_id;

-- name: next_event_id
-- Past every consumer's position too: retention may have deleted the newest groups, and
-- an id a consumer has read past must never be given again.
SELECT max(
    coalesce((SELECT max(id) FROM events), 0),
    coalesce((SELECT max(position) FROM consumers), 0)
) + 1;

-- name: insert_event
-- Positional: run with executemany, one row per group of events.
INSERT INTO events (id, client_id, type, count, notify, notifications, facts, created_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?);

-- name: insert_outbox
INSERT INTO outbox (integration_id, event_id, count) VALUES (?, ?, ?);

-- name: due_deliveries
SELECT d.*, b.body FROM deliveries d JOIN delivery_bodies b ON b.delivery_id = d.id
WHERE status IN ('pending', 'retrying') AND next_attempt_at <= :now
  AND (lease_until IS NULL OR lease_until <= :now)
  AND integration_id NOT IN (SELECT value FROM json_each(:busy))
ORDER BY next_attempt_at LIMIT :limit;

-- name: lease_delivery
UPDATE deliveries SET lease_owner = :owner, lease_until = :lease_until WHERE id = :id;

-- name: outbox_integrations
-- Hops from one integration id to the next in the index instead of scanning every row.
WITH RECURSIVE ids (i) AS (
    SELECT min(integration_id) FROM outbox
    UNION ALL
    SELECT (SELECT min(integration_id) FROM outbox WHERE integration_id > ids.i) FROM ids
    WHERE ids.i IS NOT NULL
)
SELECT i FROM ids WHERE i IS NOT NULL;

-- name: outbox_counts
-- Counts only: the blobs of the groups that fit are read by outbox_upto.
SELECT id, count FROM outbox WHERE integration_id = :integration_id ORDER BY id LIMIT :limit;

-- name: outbox_upto
SELECT o.id, o.count, e.notifications FROM outbox o JOIN events e ON e.id = o.event_id
WHERE o.integration_id = :integration_id AND o.id <= :last_id ORDER BY o.id;

-- name: delete_outbox_upto
DELETE FROM outbox WHERE integration_id = :integration_id AND id <= :last_id;

-- name: next_delivery_id
SELECT coalesce(max(id), 0) + 1 FROM deliveries;

-- name: insert_delivery
-- Positional: run with executemany, one row per delivery, ids assigned by the caller.
INSERT INTO deliveries (id, webhook_id, integration_id, client_id, status, notification_count,
    next_attempt_at, lease_owner, lease_until, created_at, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?);

-- name: insert_delivery_body
-- Positional, with insert_delivery: bodies never change, so they have a table of their
-- own (migration 4), and recording an attempt does not write them again.
INSERT INTO delivery_bodies (delivery_id, body) VALUES (?, ?);

-- name: delivery_by_id
SELECT d.*, b.body FROM deliveries d JOIN delivery_bodies b ON b.delivery_id = d.id
WHERE d.id = :id;

-- name: insert_attempt
INSERT INTO attempts (delivery_id, integration_id, number, started_at, duration_ms, ok, status_code,
    error, response_body, request_size)
SELECT :delivery_id, :integration_id, attempt_count + 1, :started_at, :duration_ms, :ok, :status_code,
    :error, :response_body, :request_size
FROM deliveries WHERE id = :delivery_id;

-- name: finish_attempt
-- A delivery cancelled while its request was in flight stays cancelled unless that request succeeded.
UPDATE deliveries SET
    status = CASE WHEN status = 'cancelled' AND :status != 'delivered' THEN 'cancelled' ELSE :status END,
    next_attempt_at = CASE WHEN status = 'cancelled' AND :status != 'delivered' THEN NULL
                           ELSE :next_attempt_at END,
    attempt_count = attempt_count + 1,
    failures = failures + :failed,
    last_error = :error,
    lease_owner = NULL, lease_until = NULL, updated_at = :now
WHERE id = :delivery_id;

-- name: attempt_stats
SELECT count(*), coalesce(sum(1 - ok), 0) FROM attempts
WHERE integration_id = :integration_id AND started_at >= :since;

-- name: auto_disable_integration
UPDATE integrations SET enabled = 0, auto_disabled = 1, disabled_reason = :reason, updated_at = :now
WHERE id = :id AND enabled = 1 AND deleted_at IS NULL;

-- name: integration_by_id_any_client
SELECT * FROM integrations WHERE id = :id;

-- name: next_due
SELECT min(coalesce(lease_until, next_attempt_at)) FROM deliveries
WHERE status IN ('pending', 'retrying');

-- name: deliveries_page
SELECT d.*, b.body FROM deliveries d JOIN delivery_bodies b ON b.delivery_id = d.id
WHERE d.client_id = :client_id AND d.integration_id = :integration_id AND d.id < :before
ORDER BY d.id DESC LIMIT :limit;

-- name: delivery_of_client
SELECT d.*, b.body FROM deliveries d JOIN delivery_bodies b ON b.delivery_id = d.id
WHERE d.id = :id AND d.client_id = :client_id;

-- name: attempts_of_delivery
SELECT number, started_at, duration_ms, status_code, error, response_body, request_size
FROM attempts WHERE delivery_id = :delivery_id ORDER BY number;

-- name: requeue_delivery
UPDATE deliveries SET status = 'pending', failures = 0, next_attempt_at = :now,
    lease_owner = NULL, lease_until = NULL, updated_at = :now
WHERE id = :id;

-- name: rotate_signing_secret
UPDATE integrations SET previous_signing_secret = signing_secret, signing_secret = :secret,
    secret_rotated_at = :now, updated_at = :now
WHERE id = :id AND client_id = :client_id AND deleted_at IS NULL;

-- name: all_integration_secrets
SELECT id, settings, signing_secret, previous_signing_secret FROM integrations;

-- name: store_integration_secrets
UPDATE integrations SET settings = :settings, signing_secret = :signing_secret,
    previous_signing_secret = :previous
WHERE id = :id;

-- name: turn_of_task
SELECT holder, ends_at FROM maintenance WHERE task = :task;

-- name: start_turn
UPDATE maintenance SET holder = :holder, started_at = :now, ends_at = :ends_at
WHERE task = :task;

-- name: old_deliveries
-- The same status list as the partial index deliveries_finished, which SQLite then uses.
SELECT id FROM deliveries
WHERE status IN ('delivered', 'failed', 'cancelled') AND updated_at < :before
ORDER BY updated_at LIMIT :limit;

-- name: delete_attempts_of_deliveries
DELETE FROM attempts WHERE delivery_id IN (SELECT value FROM json_each(:ids));

-- name: delete_deliveries
DELETE FROM deliveries WHERE id IN (SELECT value FROM json_each(:ids));

-- name: delete_bodies_of_deliveries
DELETE FROM delivery_bodies WHERE delivery_id IN (SELECT value FROM json_each(:ids));

-- name: prune_events
-- An event that an outbox row still refers to is queued work: it stays. NOT IN reads
-- the outbox (a queue, nearly always small) once, not once per event.
DELETE FROM events WHERE id IN (
    SELECT id FROM events
    WHERE created_at < :before AND id NOT IN (SELECT event_id FROM outbox)
    ORDER BY created_at LIMIT :limit
);

-- name: prune_denylist
DELETE FROM denylist WHERE id IN (
    SELECT id FROM denylist WHERE expire_at < :before ORDER BY expire_at LIMIT :limit
);

-- name: insert_trigger
INSERT INTO triggers (client_id, name, comment, enabled, condition, definition, created_at,
                      updated_at, counting_since)
VALUES (:client_id, :name, :comment, :enabled, :condition, :definition, :now, :now, :now);

-- name: triggers_of_client
SELECT id, client_id, name, comment, enabled, condition, definition, created_at, updated_at,
       counting_since
FROM triggers WHERE client_id = :client_id ORDER BY id;

-- name: trigger_of_client
SELECT id, client_id, name, comment, enabled, condition, definition, created_at, updated_at,
       counting_since
FROM triggers WHERE client_id = :client_id AND id = :id;

-- name: all_triggers
SELECT id, client_id, name, comment, enabled, condition, definition, created_at, updated_at,
       counting_since
FROM triggers ORDER BY id;

-- name: update_trigger
UPDATE triggers SET name = :name, comment = :comment, enabled = :enabled,
    condition = :condition, definition = :definition, updated_at = :now,
    counting_since = :counting_since
WHERE client_id = :client_id AND id = :id;

-- name: delete_trigger
DELETE FROM triggers WHERE client_id = :client_id AND id = :id;

-- the event stream ---------------------------------------------------------------

-- name: add_consumer
INSERT OR IGNORE INTO consumers (name) VALUES (:name);

-- name: consumer
SELECT position, state FROM consumers WHERE name = :name;

-- name: stream_after
SELECT id, client_id, type, count, facts, created_at FROM events
WHERE id > :position ORDER BY id LIMIT :limit;

-- name: move_consumer
UPDATE consumers SET position = :position, state = :state, updated_at = :now
WHERE name = :name;

-- name: insert_trigger_denylist
INSERT INTO denylist (client_id, ip, reason, application, created_at, expire_at, created_by,
                      trigger_id)
VALUES (:client_id, :ip, :reason, NULL, :now, :expire_at, :created_by, :trigger_id);
