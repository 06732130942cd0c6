"""The event stream across processes: a consumer killed with SIGKILL resumes where its
last commit left off, and two processes sharing PostgreSQL consume each event once.

The consumer is tests/stream_consumer.py: its state lists every probe it acted on and
each probe's echo is an event written in the same transaction, so a probe skipped or
acted on twice shows in the state and in the count of echoes.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import orjson
import pytest

from tests import pg
from tests.stream_consumer import CONSUMER, consume_until, probe
from tests.unit.test_store_contract import BOOT, T0
from tocsin.crypto import Vault
from tocsin.models import StreamEvent
from tocsin.store import Reaction, Store, open_store

PROBES = 400
KEY = Vault.generate_key()
VAULT = Vault([KEY])


@contextlib.contextmanager
def consumer(url: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    command = [sys.executable, "-m", "tests.stream_consumer", url, KEY.decode(), str(PROBES)]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


def progress(log: Path) -> int:
    """How many probes the consumer's last commit held, by what it printed."""
    lines = [line for line in log.read_text().splitlines() if line.startswith("seen ")]
    return int(lines[-1].split()[1]) if lines else 0


async def seeded(url: str) -> Store:
    store = open_store(url, vault=VAULT, synchronous="NORMAL")
    await store.migrate()
    assert await store.bootstrap(BOOT, T0)
    [client] = await store.list_clients()
    for start in range(0, PROBES, 4):  # stored groups of 4 probes
        await store.ingest(client.id, [probe(n) for n in range(start, start + 4)], T0)
    return store


async def witnessed(store: Store) -> tuple[list[int], list[int]]:
    """The probes in the consumer's state, and the probes whose echo was stored."""
    states: list[bytes] = []
    echoes: list[int] = []

    def audit(events: Sequence[StreamEvent], state: bytes) -> Reaction:
        echoes.extend(e.facts["n"] for e in events if e.facts.get("kind") == "seen")
        return Reaction(state=state)

    def peek(_events: Sequence[StreamEvent], state: bytes) -> Reaction:
        states.append(state)
        return Reaction(state=state)

    while await store.consume("audit", audit, limit=1000, now=T0):
        pass
    while await store.consume(CONSUMER, peek, limit=1000, now=T0):
        pass
    return orjson.loads(states[-1]), sorted(echoes)


async def wait_for_progress(process: subprocess.Popen[bytes], log: Path, at_least: int) -> None:
    async with asyncio.timeout(60):
        while progress(log) < at_least:
            assert process.poll() is None, log.read_text()
            await asyncio.sleep(0.01)


async def killed_then_resumed(url: str, tmp_path: Path) -> None:
    store = await seeded(url)
    try:
        log = tmp_path / "consumer.log"
        with consumer(url, log) as process:
            await wait_for_progress(process, log, 100)
            process.send_signal(signal.SIGKILL)
            assert process.wait(timeout=10) == -signal.SIGKILL
        assert progress(log) < PROBES, "the kill came too late to matter"
        await consume_until(store, PROBES, limit=50)  # this process takes over

        state, echoes = await witnessed(store)
        assert state == list(range(PROBES))  # every probe once, in order
        assert echoes == list(range(PROBES))  # and acted on once each
    finally:
        await store.close()


@pytest.mark.slow
async def test_a_sqlite_consumer_killed_mid_stream_resumes_where_it_committed(
    tmp_path: Path,
) -> None:
    await killed_then_resumed(f"sqlite:///{tmp_path / 'stream.db'}", tmp_path)


@pytest.mark.slow
async def test_a_postgres_consumer_killed_mid_stream_resumes_where_it_committed(
    tmp_path: Path,
) -> None:
    async with pg.database(migrated=False) as url:
        await killed_then_resumed(url, tmp_path)


@pytest.mark.slow
async def test_two_processes_on_postgres_consume_each_event_once(tmp_path: Path) -> None:
    async with pg.database(migrated=False) as url:
        store = await seeded(url)
        try:
            logs = [tmp_path / "one.log", tmp_path / "two.log"]
            with consumer(url, logs[0]) as one, consumer(url, logs[1]) as two:
                for process, log in ((one, logs[0]), (two, logs[1])):
                    assert process.wait(timeout=120) == 0, log.read_text()
            state, echoes = await witnessed(store)
        finally:
            await store.close()
    assert state == list(range(PROBES))
    assert echoes == list(range(PROBES))
    assert all(progress(log) == PROBES for log in logs)  # each saw the whole stream's end
