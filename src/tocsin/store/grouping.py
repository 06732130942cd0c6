"""How accepted events become stored groups and deliveries (shared by the stores; pure).

Events of one ingest call that go to the same integrations are stored together as one
group: their notifications joined by newlines (compact JSON never holds a raw newline),
at most `max_batch` per group. A claim then takes whole groups, oldest first, up to
`max_batch` notifications per delivery. Storing a group as one row, not one row per
event, is what lets one process ingest tens of thousands of hits per second.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from tocsin.models import BodyFormat, EventType, NewEvent, RiskLevel


@dataclass(frozen=True, slots=True, kw_only=True)
class Group:
    """Consecutive events with the same routing, stored as one row."""

    type: EventType
    risk: RiskLevel | None
    skip_integration: int | None
    targets: tuple[int, ...] | None
    notify: bool
    notifications: tuple[bytes, ...]
    facts: tuple[bytes, ...]

    @property
    def blob(self) -> bytes:
        return b"\n".join(self.notifications)

    @property
    def facts_blob(self) -> bytes:
        """The events' facts for the stream, one compact JSON object a line."""
        return b"\n".join(self.facts)


_Routing = tuple[EventType, RiskLevel | None, int | None, tuple[int, ...] | None, bool]


def group(events: Sequence[NewEvent], notify: Sequence[bool], max_batch: int) -> Iterator[Group]:
    """Split events, in order, into groups of one routing and at most max_batch events."""
    notifications: list[bytes] = []
    facts: list[bytes] = []
    routing: _Routing | None = None
    for event, notifies in zip(events, notify, strict=True):
        key = (event.type, event.risk, event.skip_integration, event.targets, notifies)
        if notifications and (key != routing or len(notifications) >= max_batch):
            yield _make(routing, notifications, facts)
            notifications, facts = [], []
        routing = key
        notifications.append(event.notification)
        facts.append(event.facts)
    if notifications:
        yield _make(routing, notifications, facts)


def _make(routing: _Routing | None, notifications: list[bytes], facts: list[bytes]) -> Group:
    assert routing is not None  # noqa: S101 - a group is made only after one event
    kind, risk, skip, targets, notifies = routing
    return Group(
        type=kind,
        risk=risk,
        skip_integration=skip,
        targets=targets,
        notify=notifies,
        notifications=tuple(notifications),
        facts=tuple(facts),
    )


def fitting(counts: Sequence[int], max_batch: int) -> int:
    """How many queued groups, oldest first, make one delivery (at least one)."""
    total = 0
    for taken, count in enumerate(counts):
        if taken and total + count > max_batch:
            return taken
        total += count
    return len(counts)


def batches(counts: Sequence[int], max_batch: int, most: int) -> list[int]:
    """How many queued groups, oldest first, make each of up to `most` deliveries."""
    sizes: list[int] = []
    start = 0
    while start < len(counts) and len(sizes) < most:
        taken = fitting(counts[start : start + max_batch], max_batch)
        sizes.append(taken)
        start += taken
    return sizes


def deliveries(
    queued: Sequence[tuple[int, bytes]], sizes: Sequence[int], body_format: BodyFormat
) -> list[tuple[int, bytes]]:
    """Each delivery's notification count and body, from queued groups (count, their
    notifications), oldest first, taken `sizes` groups at a time (as `batches` gave them)."""
    made: list[tuple[int, bytes]] = []
    start = 0
    for size in sizes:
        taken = queued[start : start + size]
        start += size
        made.append((sum(count for count, _ in taken), body([b for _, b in taken], body_format)))
    return made


def body(blobs: Sequence[bytes], body_format: BodyFormat) -> bytes:
    """The request body of a delivery made of these groups."""
    if body_format is BodyFormat.NDJSON:
        return b"\n".join(blobs) + b"\n"
    return b"[" + b",".join(blobs).replace(b"\n", b",") + b"]"
