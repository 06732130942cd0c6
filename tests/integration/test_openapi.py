"""Schemathesis over /api/v1/openapi.json: every operation answers as the document says.

An in-process app (ASGI, SQLite) is driven by schemathesis with an administrator token,
and `/clients` with the operator token. No response may be a 5xx, and its status code,
content type, headers and body must be ones the document declares for the operation.

No request leaves the machine. Creating, changing and testing an integration resolves
and contacts its `url`: `aim_at_receiver` replaces every generated `url` string in a
request body with the URL of an HTTPS receiver on loopback before the request is sent,
so no generated host name is ever looked up (a `url` that is not a string fails
validation before tocsin reads it). Deliveries go only to saved integrations, whose
URLs all came through the same replacement or from `seed`.

The database is seeded with two objects of each kind, and path ids are drawn from those
objects as often as from schemathesis's integers, so that the success responses are
checked too, not only the 404s; `SUCCESSES` adds valid bodies for the operations whose
generated bodies are almost never valid. The readiness probe's 503 is checked as well.

Bounded and reproducible: a fixed seed, derandomized generation, a few examples per
operation, no example database; about 30 s.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import ADMIN_TOKEN, Running, hit, make_settings
from tocsin.api import create_app
from tocsin.config import Settings
from tocsin.crypto import Vault
from tocsin.receiver import Receiver
from tocsin.service import Tocsin
from tocsin.store.sqlite import SqliteStore

OPERATOR_TOKEN = "tcs_test_operator_token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
OPERATOR = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
CONFIG = schemathesis.Config.from_dict(
    {
        "seed": 3_141_592,
        "generation": {
            "max-examples": 15,
            "deterministic": True,
            "database": "none",
            # The token is ours to send (below), not a generated value.
            "with-security-parameters": False,
        },
        "phases": {"coverage": {"enabled": False}, "stateful": {"enabled": False}},
    }
)


def _document() -> dict[str, Any]:
    """The document of an app that is never started (its store is never opened)."""
    vault = Vault([Vault.generate_key()])
    return create_app(
        Tocsin(Settings(), SqliteStore(Path("never-opened.db"), vault=vault), vault=vault)
    ).openapi()


# Loaded at import, for pytest to collect one test per operation; the requests go to the
# app of the `target` fixture. (schemathesis.pytest.from_fixture would load it from a
# fixture, but its lazy loader reads a pytest attribute that pytest 9 no longer has.)
DOCUMENT = _document()
schema = schemathesis.openapi.from_dict(DOCUMENT, config=CONFIG)

# Path parameter -> ids of seeded objects, filled in by `seeded` before any case is drawn.
SEEDED: dict[str, list[int]] = {}


@schema.hook
def flatmap_path_parameters(
    context: schemathesis.HookContext, path_parameters: dict[str, Any]
) -> st.SearchStrategy[dict[str, Any]]:
    """As often as not, name a seeded object instead of a generated id."""
    known = [seeded_ids(path_parameters, name) for name in path_parameters or {} if name in SEEDED]
    return st.one_of(st.just(path_parameters), *known)


def seeded_ids(path_parameters: dict[str, Any], name: str) -> st.SearchStrategy[dict[str, Any]]:
    def naming(value: int) -> dict[str, Any]:
        return {**path_parameters, name: value}

    return st.sampled_from(SEEDED[name]).map(naming)


class Target:
    """The app under test, the receiver its integrations point at, and whom to spare."""

    def __init__(self, app: FastAPI, receiver: Receiver, admin_user: int, admin_token: int) -> None:
        self.app = app
        self.receiver = receiver
        self.admin_user = admin_user
        self.admin_token = admin_token


@pytest.fixture(scope="module")
def target_receiver(server_tls: Any) -> Iterator[Receiver]:
    receiver = Receiver(tls=server_tls).start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Vault]:
    """One SQLite database, and the key of its secrets, for every operation."""
    return tmp_path_factory.mktemp("openapi") / "tocsin.db", Vault([Vault.generate_key()])


def app_on(database: tuple[Path, Vault]) -> FastAPI:
    """A new service on the database, started with the app's lifespan."""
    path, vault = database
    settings = make_settings(path.parent, operator_token=OPERATOR_TOKEN)
    store = SqliteStore(path, vault=vault, synchronous="NORMAL")
    return create_app(Tocsin(settings, store, vault=vault), manage_lifecycle=True)


def asgi_app(app: FastAPI) -> asgi.ASGIApp:
    """The app as schemathesis types an ASGI app (it annotates the scope as a dict)."""
    return cast("asgi.ASGIApp", app)


TRIGGER = {
    "name": "t",
    "condition": "hits_exceeded",
    "filters": [{"id": "attack_type", "operator": "eq", "values": ["sqli"]}],
    "threshold": {"count": 10, "period": 60},
    "actions": [{"id": "denylist_ip", "lock_time": 600}],
}


def seed(client: asgi.ASGIClient, receiver_url: str) -> dict[str, list[int]]:
    """Two objects of each kind, and the deliveries they cause: the first of each is kept
    for the operations that follow a deletion (see `keep_the_first`)."""

    def created(path: str, body: Any, headers: dict[str, str] = ADMIN) -> dict[str, Any]:
        response = client.post(f"/api/v1{path}", json=body, headers=headers)
        assert response.status_code in (201, 202), response.text
        shown: dict[str, Any] = response.json()
        return shown

    target = {"url": receiver_url, "verify_tls": False, "events": ["hit", "system"]}
    integrations = [created("/integrations", {"name": f"receiver {n}"} | target) for n in (1, 2)]
    created("/hits", [hit()])
    users = [
        created("/users", {"email": f"{name}@example.com", "name": name, "role": "analyst"})
        for name in ("ana", "bo")
    ]
    tokens = [created("/tokens", {"user_id": users[0]["id"], "name": n}) for n in ("a", "b")]
    applications = [created("/applications", {"id": n, "name": f"app {n}"}) for n in (7, 8)]
    entries = [
        created("/denylist", {"ip": ip, "lock_time": 3600}) for ip in ("203.0.113.9", "2001:db8::9")
    ]
    triggers = [created("/triggers", TRIGGER | {"name": name}) for name in ("sqli flood", "per ip")]
    clients = [
        created("/clients", {"name": name, "admin_email": f"ops@{name}.example"}, OPERATOR)
        for name in ("globex", "initech")
    ]
    first = integrations[0]["id"]
    log = client.get(f"/api/v1/integrations/{first}/deliveries", headers=ADMIN).json()
    assert log["items"], "creating the second integration and the hit queue deliveries"
    return {
        "integration_id": [item["id"] for item in integrations],
        "delivery_id": [delivery["id"] for delivery in log["items"]],
        "user_id": [item["id"] for item in users],
        "token_id": [item["id"] for item in tokens],
        "application_id": [item["id"] for item in applications],
        "entry_id": [item["id"] for item in entries],
        "trigger_id": [item["id"] for item in triggers],
        "client_id": [item["id"] for item in clients],
    }


@pytest.fixture(scope="module")
def seeded(database: tuple[Path, Vault], target_receiver: Receiver) -> tuple[int, int]:
    """Seed the database; the bootstrap administrator's user and token ids."""
    try:
        with asgi.get_client(asgi_app(app_on(database))) as client:
            SEEDED.update(seed(client, target_receiver.url))
            users = client.get("/api/v1/users", headers=ADMIN).json()
            tokens = client.get("/api/v1/tokens", headers=ADMIN).json()
    finally:
        asgi.shutdown_lifespans()
    admin = next(user["id"] for user in users if user["email"] == "admin@localhost")
    [token] = [token["id"] for token in tokens if token["user_id"] == admin]
    return admin, token


@pytest.fixture
def target(
    database: tuple[Path, Vault], seeded: tuple[int, int], target_receiver: Receiver
) -> Iterator[Target]:
    """A tocsin on the shared database, started in schemathesis's event loop thread.

    The schemathesis pytest plugin ends every ASGI app's lifespan after each test (one
    test per operation), and a stopped service does not start again, so each operation
    gets a service of its own on the same database.
    """
    admin_user, admin_token = seeded
    try:
        yield Target(app_on(database), target_receiver, admin_user, admin_token)
    finally:
        asgi.shutdown_lifespans()


def test_the_document_is_the_running_apps(target: Target) -> None:
    with asgi.get_client(asgi_app(target.app)) as client:
        assert client.get("/api/v1/openapi.json").json() == DOCUMENT


# Bodies that succeed, for operations whose generated bodies rarely do (an email, an IP
# address, a scope entry): their success responses are checked against the document too.
# A call may remember the id it made under a name; `{name}` stands for that id later.
SUCCESSES: list[tuple[str, str, Any, int, str | None]] = [
    ("POST", "/users", {"email": "cy@example.com", "name": "Cy", "role": "deploy"}, 201, "user"),
    ("PATCH", "/users/{user}", {"role": "api_developer"}, 200, None),
    ("POST", "/tokens", {"user_id": "{user}", "expires_at": "2100-01-01T00:00:00Z"}, 201, "token"),
    ("DELETE", "/tokens/{token}", None, 204, None),
    ("DELETE", "/users/{user}", None, 204, None),
    ("POST", "/denylist", {"ip": "192.0.2.55", "expire_at": 4_000_000_000}, 201, None),
    ("POST", "/denylist", {"ip": "192.0.2.56", "lock_time": 60, "reason": "bots"}, 201, "entry"),
    ("DELETE", "/denylist/{entry}", None, 204, None),
    ("POST", "/scope-changes", {"domains": {"added": ["new.example.com"]}}, 202, None),
    (
        "POST",
        "/api-changes",
        {
            "changes": [{"change": "changed", "method": "PUT", "path": "/v1/cart"}],
            "rogue_apis": [{"kind": "zombie", "method": "GET", "path": "/v0/cart"}],
        },
        202,
        None,
    ),
    ("POST", "/integrations/test", {"name": "t", "url": "{url}", "verify_tls": False}, 200, None),
    ("POST", "/triggers", TRIGGER | {"name": "made"}, 201, "trigger"),
    (
        "PUT",
        "/triggers/{trigger}",
        TRIGGER | {"name": "put", "condition": "attacks_exceeded"},
        200,
        None,
    ),
    ("PATCH", "/triggers/{trigger}", {"comment": "why", "enabled": False}, 200, None),
    ("POST", "/triggers/{trigger}/enable", None, 200, None),
    ("POST", "/triggers/{trigger}/disable", None, 200, None),
    ("DELETE", "/triggers/{trigger}", None, 204, None),
    ("POST", "/clients", {"name": "Umbrella", "admin_email": "it@umbrella.example"}, 201, "client"),
    ("PATCH", "/clients/{client}", {"cloud": "US", "console_url": "https://u.example"}, 200, None),
]


def filled(value: Any, made: dict[str, Any]) -> Any:
    """`"{user}"` -> what was made under that name (the whole value, keeping its type)."""
    if isinstance(value, dict):
        return {key: filled(item, made) for key, item in value.items()}
    if isinstance(value, str) and value.startswith("{") and value.endswith("}"):
        return made[value[1:-1]]
    return value


def test_successful_answers_match_the_document(target: Target) -> None:
    made: dict[str, Any] = {"url": target.receiver.url}
    for method, path, body, status, remember in SUCCESSES:
        route = "/api/v1" + re.sub(r"\{(\w+)\}", r"{\1_id}", path)
        names = re.findall(r"\{(\w+)\}", path)
        params = {f"{name}_id": made[name] for name in names}
        operation = schema[route][method]
        case = (
            operation.Case(path_parameters=params)
            if body is None
            else operation.Case(
                path_parameters=params, body=filled(body, made), media_type="application/json"
            )
        )
        token = OPERATOR_TOKEN if path.startswith("/clients") else ADMIN_TOKEN
        response = case.call_and_validate(
            app=target.app, headers={"Authorization": f"Bearer {token}"}, checks=CHECKS
        )
        assert response.status_code == status, (method, path, response.text)
        if remember:
            made[remember] = response.json()["id"]


async def test_readyz_answers_as_documented_when_delivery_is_not_running(
    tocsin: Running,
) -> None:
    await tocsin.runtime.dispatcher.stop()
    response = await tocsin.api.get("/readyz")
    assert response.status_code == 503
    assert response.json()["problems"] == ["delivery workers are not running"]
    # A 5xx by design; every other check holds.
    checks = [check for check in CHECKS if check is not not_a_server_error]
    schema["/readyz"]["GET"].Case().validate_response(response, checks=checks)


def aim_at_receiver(case: schemathesis.Case[Any], url: str) -> None:
    """Point every generated integration URL at the loopback receiver."""
    if isinstance(case.body, dict) and isinstance(case.body.get("url"), str):
        case.body["url"] = url


def _names(value: object, protected: int) -> bool:
    try:
        return int(str(value)) == protected
    except ValueError:
        return False


def spare_the_caller(case: schemathesis.Case[Any], target: Target) -> None:
    """Keep the administrator and its token: demoting, deleting or revoking them would turn
    every later call into a 403 or 401 and test nothing."""
    params = case.path_parameters or {}
    for name, protected in (("user_id", target.admin_user), ("token_id", target.admin_token)):
        if name in params and _names(params[name], protected):
            params[name] = 2**31 - 1


def keep_the_first(case: schemathesis.Case[Any]) -> None:
    """A deletion takes the second seeded object of its kind, never the first, so that the
    operations after it still find one."""
    params = case.path_parameters or {}
    for name, ids in SEEDED.items():
        if case.method == "DELETE" and name in params and _names(params[name], ids[0]):
            params[name] = ids[-1]


@schema.parametrize()
# One service per operation (see `target`), shared by that operation's examples on purpose.
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_every_operation_answers_as_documented(
    case: schemathesis.Case[Any], target: Target
) -> None:
    aim_at_receiver(case, target.receiver.url)
    spare_the_caller(case, target)
    keep_the_first(case)
    token = OPERATOR_TOKEN if case.path.startswith("/api/v1/clients") else ADMIN_TOKEN
    case.call_and_validate(
        app=target.app, headers={"Authorization": f"Bearer {token}"}, checks=CHECKS
    )
