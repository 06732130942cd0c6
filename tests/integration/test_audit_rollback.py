"""An administrative change and its system notification commit together, or neither does.

The database is made to refuse every insert into `events` (a trigger), as a full disk
or a dropped connection would refuse the notification's insert: each change answers
503 and is not there afterwards, on SQLite and PostgreSQL alike. Before, the change
committed in a transaction of its own and only the notification was lost. A new
client, its first administrator and that one's token commit together too.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import asyncpg
import httpx
import pytest

from tests.conftest import Running, StartTocsin
from tocsin.models import NewEvent, WebhookSettings

T0 = 1_900_000_000.0

SQLITE_REFUSE = (
    "CREATE TRIGGER refuse_events BEFORE INSERT ON events "
    "BEGIN SELECT RAISE(ABORT, 'events refused by the test'); END"
)
POSTGRES_REFUSE = (
    "CREATE FUNCTION refuse_events() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN RAISE EXCEPTION 'events refused by the test'; END $$; "
    "CREATE TRIGGER refuse_events BEFORE INSERT ON events "
    "FOR EACH STATEMENT EXECUTE FUNCTION refuse_events()"
)


async def refuse_inserts(tocsin: Running, table: str = "events") -> None:
    """From now on, the database refuses to insert any row into `table`."""
    if tocsin.kind == "sqlite":
        conn = sqlite3.connect(tocsin.database)
        try:
            conn.execute(SQLITE_REFUSE.replace(" ON events ", f" ON {table} "))
            conn.commit()
        finally:
            conn.close()
        return
    pg = await asyncpg.connect(tocsin.database)
    try:
        await pg.execute(POSTGRES_REFUSE.replace(" ON events ", f" ON {table} "))
    finally:
        await pg.close()


async def json(api: httpx.AsyncClient, path: str) -> Any:
    response = await api.get(path)
    assert response.status_code == 200, response.text
    return response.json()


# Subscribed to hits only: no delivery is made, so nothing but the test changes its row.
INTEGRATION = {"name": "siem", "url": "https://127.0.0.1:9/hook", "events": ["hit"]}


@pytest.fixture
async def setup(tocsin: Running) -> dict[str, Any]:
    """An integration, a user and an application to change."""
    made: dict[str, Any] = {}
    response = await tocsin.api.post("/api/v1/integrations", json=INTEGRATION)
    assert response.status_code == 201, response.text
    made["integration"] = response.json()["id"]
    user = {"email": "ann@example.com", "name": "Ann", "role": "analyst"}
    response = await tocsin.api.post("/api/v1/users", json=user)
    assert response.status_code == 201, response.text
    made["user"] = response.json()["id"]
    response = await tocsin.api.post("/api/v1/applications", json={"name": "shop"})
    assert response.status_code == 201, response.text
    made["application"] = response.json()["id"]
    return made


async def state(api: httpx.AsyncClient) -> dict[str, Any]:
    """What an administrator sees of the configuration."""
    return {
        "integrations": await json(api, "/api/v1/integrations"),
        "users": await json(api, "/api/v1/users"),
        "applications": await json(api, "/api/v1/applications"),
        "denylist": await json(api, "/api/v1/denylist"),
    }


def changes(made: dict[str, Any]) -> list[tuple[str, str, dict[str, Any] | None]]:
    """Every administrative change that notifies: method, path, body."""
    integration = f"/api/v1/integrations/{made['integration']}"
    return [
        ("POST", "/api/v1/integrations", INTEGRATION | {"name": "another"}),
        ("PUT", integration, INTEGRATION | {"name": "renamed"}),
        ("PATCH", integration, {"enabled": False}),
        ("POST", f"{integration}/disable", None),
        ("POST", f"{integration}/rotate-secret", None),
        ("DELETE", integration, None),
        ("POST", "/api/v1/users", {"email": "bob@example.com", "name": "Bob", "role": "deploy"}),
        ("PATCH", f"/api/v1/users/{made['user']}", {"role": "read_only"}),
        ("DELETE", f"/api/v1/users/{made['user']}", None),
        ("POST", "/api/v1/applications", {"name": "api"}),
        ("PATCH", f"/api/v1/applications/{made['application']}", {"name": "store"}),
        ("DELETE", f"/api/v1/applications/{made['application']}", None),
        ("POST", "/api/v1/denylist", {"ip": "203.0.113.7", "lock_time": 3600}),
    ]


async def test_a_change_whose_notification_cannot_be_stored_is_not_made(
    tocsin: Running, setup: dict[str, Any]
) -> None:
    before = await state(tocsin.api)
    secret = (await json(tocsin.api, f"/api/v1/integrations/{setup['integration']}"))[
        "signing_secret"
    ]
    await refuse_inserts(tocsin)
    for method, path, body in changes(setup):
        response = await tocsin.api.request(method, path, json=body)
        assert response.status_code == 503, (method, path, response.text)
        assert await state(tocsin.api) == before, (method, path)
    after = await json(tocsin.api, f"/api/v1/integrations/{setup['integration']}")
    assert after["signing_secret"] == secret


class RendererError(Exception):
    pass


def failing_renderer(_: object) -> list[NewEvent]:
    raise RendererError


async def test_a_change_whose_notification_fails_to_render_is_not_made(
    tocsin: Running, setup: dict[str, Any]
) -> None:
    """The store calls the renderer inside the change's transaction: its failure undoes it."""
    store = tocsin.runtime.context.store
    client = (await store.list_clients())[0].id
    before = await state(tocsin.api)
    settings = WebhookSettings(name="new", url="https://127.0.0.1:9/new")
    with pytest.raises(RendererError):
        await store.create_integration(client, settings, "whsec_x", T0, audit=failing_renderer)
    with pytest.raises(RendererError):
        await store.set_enabled(
            client, setup["integration"], enabled=False, now=T0, audit=failing_renderer
        )
    with pytest.raises(RendererError):
        await store.delete_user(client, setup["user"], T0, audit=failing_renderer)
    with pytest.raises(RendererError):
        await store.add_denylist(
            client,
            ip="203.0.113.7",
            reason="",
            application=None,
            expire_at=T0 * 2,
            created_by="test",
            now=T0,
            audit=failing_renderer,
        )
    assert await state(tocsin.api) == before


OPERATOR_TOKEN = "tcs_test_operator_token"


async def test_a_client_whose_first_token_cannot_be_stored_is_not_made(
    start_tocsin: StartTocsin,
) -> None:
    tocsin = await start_tocsin(operator_token=OPERATOR_TOKEN)
    operator = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    before = (await tocsin.api.get("/api/v1/clients", headers=operator)).json()
    await refuse_inserts(tocsin, "tokens")
    client = {"name": "Globex", "admin_email": "hank@globex.example"}
    response = await tocsin.api.post("/api/v1/clients", json=client, headers=operator)
    assert response.status_code == 503, response.text
    assert (await tocsin.api.get("/api/v1/clients", headers=operator)).json() == before
