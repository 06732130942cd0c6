"""Events and deliveries as older SQLite schema versions stored them, for the tests that
upgrade old databases, which today's store code no longer writes: up to version 3 a
delivery's body was a column of `deliveries` (migration 4 moved bodies to
`delivery_bodies`); up to version 4 an event group had no facts and there was no
`consumers` table (migration 5, the event stream).
"""

from __future__ import annotations

import contextlib
import secrets
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from tocsin.models import BodyFormat, DeliveryStatus, Integration, NewEvent
from tocsin.store import grouping


def old_delivery(
    path: Path,
    integration: Integration,
    *,
    status: DeliveryStatus,
    at: float,
    attempts: Sequence[bool],
    next_at: float | None = None,
) -> int:
    """Move the integration's oldest queued group into a delivery, laid out as versions 1-3
    did, with an attempt per item of `attempts` (True: it succeeded); the delivery's id.

    What the store itself did then: the outbox row goes, the delivery holds the group's
    notifications as its body, a failed last attempt leaves the integration's last error.
    """
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        outbox_id, count, blob = conn.execute(
            "SELECT o.id, o.count, e.notifications FROM outbox o JOIN events e"
            " ON e.id = o.event_id WHERE o.integration_id = ? ORDER BY o.id LIMIT 1",
            (integration.id,),
        ).fetchone()
        conn.execute("DELETE FROM outbox WHERE id = ?", (outbox_id,))
        failures = sum(1 for ok in attempts if not ok)
        delivery_id = conn.execute(
            "INSERT INTO deliveries (webhook_id, integration_id, client_id, status,"
            " notification_count, body, attempt_count, failures, next_attempt_at, created_at,"
            " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                f"msg_{secrets.token_hex(8)}",
                integration.id,
                integration.client_id,
                status.value,
                count,
                grouping.body([bytes(blob)], BodyFormat.JSON_ARRAY),
                len(attempts),
                failures,
                next_at,
                at,
                at,
            ),
        ).lastrowid
        for number, ok in enumerate(attempts, start=1):
            conn.execute(
                "INSERT INTO attempts (delivery_id, integration_id, number, started_at,"
                " duration_ms, ok, status_code, error, response_body, request_size)"
                " VALUES (?, ?, ?, ?, 12.5, ?, ?, ?, ?, 100)",
                (
                    delivery_id,
                    integration.id,
                    number,
                    at,
                    ok,
                    200 if ok else 503,
                    None if ok else "HTTP 503",
                    "ok" if ok else "busy",
                ),
            )
        last_error = None if attempts and attempts[-1] else "HTTP 503"
        conn.execute(
            "UPDATE integrations SET last_error = ? WHERE id = ?", (last_error, integration.id)
        )
    assert delivery_id is not None
    return delivery_id


def old_ingest(path: Path, client_id: int, events: Sequence[NewEvent], at: float) -> None:
    """Store events as one group queued for each of the client's integrations, as versions
    1-4 did (no facts); the tests' integrations take every event they are given."""
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        event_id = conn.execute(
            "INSERT INTO events (client_id, type, count, notify, notifications, created_at)"
            " VALUES (?, ?, ?, 1, ?, ?)",
            (
                client_id,
                events[0].type.value,
                len(events),
                b"\n".join(event.notification for event in events),
                at,
            ),
        ).lastrowid
        conn.execute(
            "INSERT INTO outbox (integration_id, event_id, count) SELECT id, ?, ? FROM"
            " integrations WHERE client_id = ? AND enabled = 1 AND deleted_at IS NULL",
            (event_id, len(events), client_id),
        )
