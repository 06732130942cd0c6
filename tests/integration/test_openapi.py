"""Schemathesis over /api/v1/openapi.json: every operation answers as the document says.

An in-process app (ASGI, SQLite) is driven by schemathesis with an administrator token,
and `/clients` with the operator token. Each response must not be a 5xx, and its status
code, content type and body must be ones the document declares for the operation.

No request leaves the machine. Creating, changing and testing an integration resolves
and contacts its `url`; `aim_at_receiver` replaces every generated `url` string in a
request body with the URL of an HTTPS receiver on loopback before the request is sent,
so no generated host name is ever looked up (a `url` that is not a string fails
validation before tocsin reads it). Deliveries go only to saved integrations, whose
URLs all passed through the same replacement.

Bounded and reproducible: a fixed seed, derandomized generation, a few examples per
operation, no example database.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
import schemathesis
from fastapi import FastAPI
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import ADMIN_TOKEN, make_settings
from tocsin.api import create_app
from tocsin.config import Settings
from tocsin.crypto import Vault
from tocsin.receiver import Receiver
from tocsin.service import Tocsin
from tocsin.store import MemoryStore
from tocsin.store.sqlite import SqliteStore

OPERATOR_TOKEN = "tcs_test_operator_token"
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
            "max-examples": 10,
            "deterministic": True,
            "database": "none",
            # The token is ours to send (below), not a generated value.
            "with-security-parameters": False,
        },
        "phases": {"coverage": {"enabled": False}, "stateful": {"enabled": False}},
    }
)


class Target:
    """The app under test, the receiver its integrations point at, and what to keep intact."""

    def __init__(
        self, app: FastAPI, receiver: Receiver, admin_user: int, admin_token: int
    ) -> None:
        self.app = app
        self.receiver = receiver
        self.admin_user = admin_user
        self.admin_token = admin_token


@pytest.fixture(scope="module")
def target_receiver(server_tls: Any) -> Iterator[Receiver]:
    receiver = Receiver(tls=server_tls).start()
    yield receiver
    receiver.stop()


def _document() -> dict[str, Any]:
    """The document of an app that is never started (it does not depend on the database)."""
    vault = Vault([Vault.generate_key()])
    return create_app(Tocsin(Settings(), MemoryStore(), vault=vault)).openapi()


# Loaded at import for pytest to collect one test per operation; the requests go to the
# app of the `target` fixture. (schemathesis.pytest.from_fixture would load it from the
# fixture, but its lazy loader reads a pytest attribute that pytest 9 no longer has.)
DOCUMENT = _document()
schema = schemathesis.openapi.from_dict(DOCUMENT, config=CONFIG)


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Vault]:
    """One SQLite database, and the key of its secrets, for every operation."""
    return tmp_path_factory.mktemp("openapi") / "tocsin.db", Vault([Vault.generate_key()])


@pytest.fixture
def target(database: tuple[Path, Vault], target_receiver: Receiver) -> Iterator[Target]:
    """A tocsin on the shared database, started in schemathesis's event loop thread.

    The schemathesis pytest plugin ends every ASGI app's lifespan after each test (one
    test per operation), and a stopped service does not start again, so each operation
    gets a service of its own on the same database.
    """
    path, vault = database
    settings = make_settings(path.parent, operator_token=OPERATOR_TOKEN)
    store = SqliteStore(path, vault=vault, synchronous="NORMAL")
    app = create_app(Tocsin(settings, store, vault=vault), manage_lifecycle=True)
    try:
        with asgi.get_client(app) as client:
            auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            # The bootstrap administrator and its token come first; the operations add more.
            admin = min(user["id"] for user in client.get("/api/v1/users", headers=auth).json())
            token = min(token["id"] for token in client.get("/api/v1/tokens", headers=auth).json())
        yield Target(app, target_receiver, admin, token)
    finally:
        asgi.shutdown_lifespans()


def test_the_document_is_the_running_apps(target: Target) -> None:
    with asgi.get_client(target.app) as client:
        assert client.get("/api/v1/openapi.json").json() == DOCUMENT


def aim_at_receiver(case: schemathesis.Case, url: str) -> None:
    """Point every generated integration URL at the loopback receiver."""
    if isinstance(case.body, dict) and isinstance(case.body.get("url"), str):
        case.body["url"] = url


def _names(value: object, protected: int) -> bool:
    try:
        return int(str(value)) == protected
    except ValueError:
        return False


def spare_the_caller(case: schemathesis.Case, target: Target) -> None:
    """Keep the administrator and its token: demoting, deleting or revoking them would turn
    every later call into a 403 or 401 and test nothing."""
    params = case.path_parameters or {}
    for name, protected in (("user_id", target.admin_user), ("token_id", target.admin_token)):
        if name in params and _names(params[name], protected):
            params[name] = 2**31 - 1


@schema.parametrize()
# One service per operation (see `target`), shared by that operation's examples on purpose.
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_every_operation_answers_as_documented(case: schemathesis.Case, target: Target) -> None:
    aim_at_receiver(case, target.receiver.url)
    spare_the_caller(case, target)
    token = OPERATOR_TOKEN if case.path.startswith("/api/v1/clients") else ADMIN_TOKEN
    r = case.call_and_validate(
        app=target.app, headers={"Authorization": f"Bearer {token}"}, checks=CHECKS
    )
    with open("/tmp/statuses.txt", "a") as f:
        f.write(f"{case.method} {case.path} {r.status_code}\n")
