"""Prometheus metrics of one process (GET /metrics).

Counters and the latency histogram count what this process did; the gauges (queue
depth, integrations by status) are read from the database at each scrape, so they
describe the whole deployment whichever process answers.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from tocsin.models import AttemptRecord, NewEvent
from tocsin.store import StoreStats

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """The registry of one service; a registry each, so several can live in one test process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._events = Counter(
            "tocsin_events_accepted",
            "Events accepted by ingestion and stored, by event type.",
            ["type"],
            registry=self.registry,
        )
        self._attempts = Counter(
            "tocsin_delivery_attempts",
            "Delivery attempts by outcome: delivered, retrying (will be tried again), failed.",
            ["outcome"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "tocsin_attempt_duration_seconds",
            "Time from sending a request to its answer or error.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._queued = Gauge(
            "tocsin_queued_notifications",
            "Notifications accepted and not yet delivered (whole deployment).",
            registry=self.registry,
        )
        self._waiting = Gauge(
            "tocsin_waiting_deliveries",
            "Deliveries pending or waiting for a retry (whole deployment).",
            registry=self.registry,
        )
        self._integrations = Gauge(
            "tocsin_integrations",
            "Integrations by status (whole deployment).",
            ["status"],
            registry=self.registry,
        )

    def accepted(self, events: Sequence[NewEvent]) -> None:
        for kind, count in Tally(event.type for event in events).items():
            self._events.labels(kind.value).inc(count)

    def attempted(self, records: Sequence[AttemptRecord]) -> None:
        for status, count in Tally(record.status for record in records).items():
            self._attempts.labels(status.value).inc(count)
        for record in records:
            self._latency.observe(record.outcome.duration_ms / 1000)

    def render(self, stats: StoreStats) -> bytes:
        """The text exposition, with the gauges set from `stats` first."""
        self._queued.set(stats.queued_notifications)
        self._waiting.set(stats.waiting_deliveries)
        for status, count in stats.integrations.items():
            self._integrations.labels(status).set(count)
        return generate_latest(self.registry)
