"""SqliteStore commits calls that wait together in one transaction, each in its own savepoint."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from tests.unit.test_store_contract import BOOT, T0, VAULT
from tocsin.errors import Conflict, StoreError
from tocsin.store.sqlite import SqliteStore


async def opened(path: Path) -> SqliteStore:
    store = SqliteStore(path, vault=VAULT)
    await store.migrate()
    return store


async def test_a_failing_call_undoes_only_itself(tmp_path: Path) -> None:
    store = await opened(tmp_path / "t.db")
    await store.bootstrap(BOOT, T0)
    client = (await store.list_clients())[0].id

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute(
            "INSERT INTO applications (client_id, id, name, created_at, updated_at) "
            "VALUES (?, 999, 'half', 0, 0)",
            (client,),
        )
        conn.execute("INSERT INTO no_such_table VALUES (1)")

    calls = [
        store.create_application(client, name=f"app {n}", now=T0, application_id=n)
        for n in range(1, 41)
    ]
    calls.append(store.create_application(client, name="again", now=T0, application_id=7))
    calls.append(store._run(broken))
    outcomes = await asyncio.gather(*calls, return_exceptions=True)

    assert isinstance(outcomes[-2], Conflict)
    assert isinstance(outcomes[-1], StoreError)
    assert not any(isinstance(o, BaseException) for o in outcomes[:-2])
    await store.close()

    reopened = await opened(tmp_path / "t.db")
    stored = await reopened.list_applications(client)
    # Everything that succeeded is on disk; the failed calls left nothing, not even half.
    assert [a.id for a in stored] == list(range(1, 41))
    assert next(a for a in stored if a.id == 7).name == "app 7"
    await reopened.close()


async def test_close_commits_what_is_queued(tmp_path: Path) -> None:
    store = await opened(tmp_path / "t.db")
    pending = [asyncio.ensure_future(store.create_client(f"c{n}", "EU", "", T0)) for n in range(20)]
    await asyncio.sleep(0)  # queued, maybe not yet run
    await store.close()
    assert {client.name for client in await asyncio.gather(*pending)} == {
        f"c{n}" for n in range(20)
    }
    reopened = await opened(tmp_path / "t.db")
    assert len(await reopened.list_clients()) == 20
    await reopened.close()


@pytest.mark.parametrize("count", [1, 300])
async def test_results_come_back_in_order_of_their_calls(tmp_path: Path, count: int) -> None:
    store = await opened(tmp_path / "t.db")
    made = await asyncio.gather(*(store.create_client(f"c{n}", "EU", "", T0) for n in range(count)))
    assert [client.name for client in made] == [f"c{n}" for n in range(count)]
    assert len({client.id for client in made}) == count
    await store.close()


async def test_a_call_after_close_fails_at_once_instead_of_waiting_forever(
    tmp_path: Path,
) -> None:
    store = await opened(tmp_path / "t.db")
    await store.close()
    async with asyncio.timeout(5):  # before the fix, the call waited for a thread that had ended
        with pytest.raises(StoreError, match="is closed"):
            await store.list_clients()
