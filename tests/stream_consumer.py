"""A stream consumer for the tests, run in-process or as its own process.

`python -m tests.stream_consumer DATABASE_URL KEY PROBES` consumes the stream as the
consumer "probe" until it has seen PROBES events of kind "probe", printing how many it
has seen after each commit. The handler is the test's witness of exactly-once: its
state lists every probe it saw, in order, and for each it emits one "seen" event in the
same transaction, so a probe acted on twice shows up twice.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

import orjson

from tocsin.crypto import Vault
from tocsin.models import EventType, NewEvent, StreamEvent
from tocsin.store import Reaction, Store, open_store

CONSUMER = "probe"


def handle(events: Sequence[StreamEvent], state: bytes) -> Reaction:
    seen: list[int] = orjson.loads(state) if state else []
    probes = [event for event in events if event.facts.get("kind") == "probe"]
    new = [event.facts["n"] for event in probes]
    echoes = [(event.client_id, seen_event(event.facts["n"])) for event in probes]
    return Reaction(state=orjson.dumps(seen + new), events=echoes)


def probe(n: int) -> NewEvent:
    facts = orjson.dumps({"kind": "probe", "n": n})
    return NewEvent(type=EventType.HIT, notification=facts, facts=facts)


def seen_event(n: int) -> NewEvent:
    facts = orjson.dumps({"kind": "seen", "n": n})
    return NewEvent(type=EventType.API_CHANGE, notification=facts, notify=False, facts=facts)


class Witness:
    """The handler, remembering how many probes the state held after its last call."""

    def __init__(self) -> None:
        self.seen = 0

    def __call__(self, events: Sequence[StreamEvent], state: bytes) -> Reaction:
        reaction = handle(events, state)
        self.seen = len(orjson.loads(reaction.state))
        return reaction


async def consume_until(store: Store, probes: int, *, limit: int, pause: float = 0.0) -> None:
    """Consume until the consumer's state holds `probes` probes."""
    witness = Witness()
    while witness.seen < probes:
        if await store.consume(CONSUMER, witness, limit=limit, now=0.0) is not None:
            print(f"seen {witness.seen}", flush=True)  # noqa: T201 - the parent reads this
        await asyncio.sleep(pause)


async def main(url: str, key: str, probes: int) -> None:
    store = open_store(url, vault=Vault([key.encode()]), synchronous="NORMAL")
    try:
        await consume_until(store, probes, limit=5, pause=0.005)
    finally:
        await store.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
