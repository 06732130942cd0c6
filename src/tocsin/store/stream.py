"""The event stream as consumers read it (shared by the stores; pure).

Every accepted event is stored in a group (store/grouping.py) with its facts, the
structured keys a consumer reads. A consumer (trigger evaluation) reads the stream after
its position, in order, through `Store.consume`: one transaction takes the consumer,
reads what follows its position, calls the consumer's handler, stores the handler's
reaction (new state, new events) and moves the position past what was read. A crash
before the commit leaves the position where it was, so nothing is skipped and nothing
is acted on twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from tocsin.models import Denylisting, EventType, NewEvent, StreamEvent


@dataclass(frozen=True, slots=True, kw_only=True)
class Reaction:
    """What a consumer does with what it read, stored in the same transaction.

    `state` is the consumer's own (opaque to the store), given back on its next call;
    `events` are (client id, event) to ingest as any reported event is; `denylist` the
    entries to add (each with its event), skipping addresses already denylisted.
    """

    state: bytes
    events: Sequence[tuple[int, NewEvent]] = ()
    denylist: Sequence[Denylisting] = ()


# handle(events read, state) -> reaction; pure and quick: it runs inside the transaction.
Handler = Callable[[Sequence[StreamEvent], bytes], Reaction]


class Row(Protocol):
    """A stored group as either driver returns it (sqlite3.Row, asyncpg.Record)."""

    def __getitem__(self, key: str, /) -> Any: ...


def decoded(row: Row) -> list[StreamEvent]:
    """A stored group's events (groups stored before the stream carry no facts: {})."""
    count, facts = row["count"], bytes(row["facts"])
    # One parse for the group: compact JSON never holds a raw newline, so the lines are
    # the items of an array once the newlines between them are commas.
    lines: list[Any] = orjson.loads(b"[" + facts.replace(b"\n", b",") + b"]") if facts else []
    if len(lines) != count:
        lines = [{}] * count
    group_id, client_id, event_type, at = (
        row["id"],
        row["client_id"],
        EventType(row["type"]),
        row["created_at"],
    )
    return [
        StreamEvent(
            group_id=group_id,
            index=index,
            client_id=client_id,
            type=event_type,
            at=at,
            facts=found,
        )
        for index, found in enumerate(lines)
    ]


def by_client(events: Sequence[tuple[int, NewEvent]]) -> list[tuple[int, list[NewEvent]]]:
    """A reaction's events as runs of one client each, in order (one ingest per run)."""
    runs: list[tuple[int, list[NewEvent]]] = []
    for client_id, event in events:
        if runs and runs[-1][0] == client_id:
            runs[-1][1].append(event)
        else:
            runs.append((client_id, [event]))
    return runs
