"""Roles (SPEC 6.3): every route against every role, masking, and client isolation.

The expectations are written here from the SPEC, not read from tocsin.roles:
administrator: everything in its client; analyst: read everything, test integrations,
re-send deliveries; read_only: read (header values and secrets masked); deploy:
ingestion only; api_developer: read and ingestion. Two readings are the project's
(docs/api.md "Roles"): listing tokens counts as configuration (administrators only),
and a denylisted IP is reported by sensors, so `POST /denylist` is ingestion too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import iter_route_contexts

from tests.conftest import ADMIN_TOKEN, Running, StartTocsin, hit
from tocsin.api import create_app
from tocsin.config import Settings
from tocsin.crypto import Vault
from tocsin.service import Tocsin
from tocsin.store.sqlite import SqliteStore

OPERATOR_TOKEN = "tcs_test_operator_token"
TARGET = "https://127.0.0.1:9/hook"  # discard port: never answers, creating does not send

ADMINISTRATOR = "administrator"
ANALYST = "analyst"
READ_ONLY = "read_only"
DEPLOY = "deploy"
API_DEVELOPER = "api_developer"
# The administrator comes last: it changes and deletes what the others were refused.
ROLES = (READ_ONLY, DEPLOY, API_DEVELOPER, ANALYST, ADMINISTRATOR)

EVERYONE = frozenset(ROLES)
ADMINISTRATORS = frozenset({ADMINISTRATOR})
READERS = frozenset({ADMINISTRATOR, ANALYST, READ_ONLY, API_DEVELOPER})
OPERATORS = frozenset({ADMINISTRATOR, ANALYST})  # test integrations, re-send deliveries
INGESTERS = frozenset({ADMINISTRATOR, DEPLOY, API_DEVELOPER})

Body = Callable[[str], Any]  # role -> request body (unique per role where it must be)


def no_body(_: str) -> None:
    return None


def integration_body(role: str) -> dict[str, Any]:
    return {"name": f"by {role}", "url": TARGET, "events": ["hit"]}


@dataclass(frozen=True)
class Call:
    method: str
    path: str  # a route path; {ids} are filled from the objects made by `seed`
    allowed: frozenset[str]
    body: Body = no_body


def trigger_body(role: str) -> dict[str, Any]:
    """A trigger needing no integration (it denylists), named for the role."""
    return {
        "name": f"by {role}",
        "condition": "hits_exceeded",
        "threshold": {"count": 50, "period": 3600},
        "actions": [{"id": "denylist_ip", "lock_time": 3600}],
    }


MATRIX = [
    # integrations: read, test (operate), everything else is configuration
    Call("GET", "/integrations", READERS),
    Call("POST", "/integrations", ADMINISTRATORS, integration_body),
    Call("POST", "/integrations/test", OPERATORS, integration_body),
    Call("GET", "/integrations/{integration_id}", READERS),
    Call("PUT", "/integrations/{integration_id}", ADMINISTRATORS, integration_body),
    Call(
        "PATCH", "/integrations/{integration_id}", ADMINISTRATORS, lambda _: {"request_timeout": 9}
    ),
    Call("POST", "/integrations/{integration_id}/disable", ADMINISTRATORS),
    Call("POST", "/integrations/{integration_id}/enable", ADMINISTRATORS),
    Call("POST", "/integrations/{integration_id}/rotate-secret", ADMINISTRATORS),
    Call("POST", "/integrations/{integration_id}/test", OPERATORS),
    Call("GET", "/integrations/{integration_id}/deliveries", READERS),
    Call("DELETE", "/integrations/{victim_integration_id}", ADMINISTRATORS),
    # the delivery log
    Call("GET", "/deliveries/{delivery_id}", READERS),
    Call("POST", "/deliveries/{delivery_id}/resend", OPERATORS),
    # ingestion
    Call("POST", "/hits", INGESTERS, lambda role: [hit(path=f"/{role}")]),
    Call("POST", "/vulnerabilities", INGESTERS, lambda role: {"title": role, "threat": "Low"}),
    Call(
        "POST", "/scope-changes", INGESTERS, lambda role: {"domains": {"added": [f"{role}.test"]}}
    ),
    Call(
        "POST",
        "/api-changes",
        INGESTERS,
        lambda role: {"changes": [{"change": "new", "method": "GET", "path": f"/{role}"}]},
    ),
    # users and tokens
    Call("GET", "/users", READERS),
    Call(
        "POST",
        "/users",
        ADMINISTRATORS,
        lambda role: {"email": f"new-{role}@example.com", "name": role, "role": READ_ONLY},
    ),
    Call("GET", "/users/{user_id}", READERS),
    Call("PATCH", "/users/{victim_user_id}", ADMINISTRATORS, lambda _: {"role": ANALYST}),
    Call("DELETE", "/users/{victim_user_id}", ADMINISTRATORS),
    Call("GET", "/tokens", ADMINISTRATORS),  # docs/api.md: which tokens exist is configuration
    Call("POST", "/tokens", ADMINISTRATORS, lambda role: {"name": f"by {role}"}),
    Call("DELETE", "/tokens/{victim_token_id}", ADMINISTRATORS),
    # applications
    Call("GET", "/applications", READERS),
    Call("POST", "/applications", ADMINISTRATORS, lambda role: {"name": f"app of {role}"}),
    Call("GET", "/applications/{application_id}", READERS),
    Call("PUT", "/applications/{application_id}", ADMINISTRATORS, lambda r: {"name": f"put {r}"}),
    Call("PATCH", "/applications/{application_id}", ADMINISTRATORS, lambda r: {"name": f"pt {r}"}),
    Call("DELETE", "/applications/{victim_application_id}", ADMINISTRATORS),
    # the denylist: sensors report addresses (ingestion), administrators add and remove them
    Call("GET", "/denylist", READERS),
    Call(
        "POST",
        "/denylist",
        INGESTERS,
        lambda role: {"ip": f"198.51.100.{ROLES.index(role) + 1}", "lock_time": 60},
    ),
    Call("DELETE", "/denylist/{victim_entry_id}", ADMINISTRATORS),
    # triggers: read, everything else is configuration
    Call("GET", "/triggers", READERS),
    Call("POST", "/triggers", ADMINISTRATORS, trigger_body),
    Call("GET", "/triggers/{trigger_id}", READERS),
    Call("PUT", "/triggers/{trigger_id}", ADMINISTRATORS, trigger_body),
    Call("PATCH", "/triggers/{trigger_id}", ADMINISTRATORS, lambda role: {"comment": role}),
    Call("POST", "/triggers/{trigger_id}/disable", ADMINISTRATORS),
    Call("POST", "/triggers/{trigger_id}/enable", ADMINISTRATORS),
    Call("DELETE", "/triggers/{victim_trigger_id}", ADMINISTRATORS),
    # the document and its viewer need no token at all
    Call("GET", "/openapi.json", EVERYONE),
    Call("GET", "/docs", EVERYONE),
]

# Managed with the deployment's operator token only (test_clients_refuse_client_tokens).
CLIENT_CALLS = [
    Call("GET", "/clients", frozenset()),
    Call("POST", "/clients", frozenset(), lambda _: {"name": "x", "admin_email": "x@x.example"}),
    Call("GET", "/clients/{client_id}", frozenset()),
    Call("PATCH", "/clients/{client_id}", frozenset(), lambda _: {"name": "renamed"}),
]


def route_key(path: str) -> str:
    """`/integrations/{victim_integration_id}` -> `/api/v1/integrations/{integration_id}`."""
    return "/api/v1" + path.replace("{victim_", "{")


def test_the_matrix_covers_every_route_under_api_v1() -> None:
    """A route added without a line here fails this test (the app is never started)."""
    vault = Vault([Vault.generate_key()])
    never_opened = SqliteStore(Path("never-opened.db"), vault=vault)
    app = create_app(Tocsin(Settings(), never_opened, vault=vault))
    routes = {
        (method, context.path)
        for context in iter_route_contexts(app.routes)
        if context.path and context.path.startswith("/api/v1/")
        for method in context.methods or ()
        if method != "HEAD"
    }
    covered = {(call.method, route_key(call.path)) for call in MATRIX + CLIENT_CALLS}
    assert routes - covered == set(), "routes the role matrix does not cover"
    assert covered - routes == set(), "calls in the matrix that are no route"


# --------------------------------------------------------------------------- the matrix


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def created(tocsin: Running, path: str, body: Any, token: str = ADMIN_TOKEN) -> Any:
    response = await tocsin.api.post(f"/api/v1{path}", json=body, headers=bearer(token))
    assert response.status_code in (201, 202), response.text
    return response.json()


async def first_delivery(tocsin: Running, integration_id: int, token: str = ADMIN_TOKEN) -> int:
    """The id of the integration's first delivery, once the dispatcher has made it."""
    url = f"/api/v1/integrations/{integration_id}/deliveries"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        items = (await tocsin.api.get(url, headers=bearer(token))).json()["items"]
        if items:
            delivery_id: int = items[-1]["id"]
            return delivery_id
        await asyncio.sleep(0.05)
    pytest.fail(f"no delivery for integration {integration_id}")


async def role_tokens(tocsin: Running) -> dict[str, str]:
    """A user of each role (the bootstrap administrator for `administrator`) and a token."""
    tokens = {ADMINISTRATOR: ADMIN_TOKEN}
    for role in ROLES:
        if role == ADMINISTRATOR:
            continue
        user = await created(
            tocsin, "/users", {"email": f"{role}@example.com", "name": role, "role": role}
        )
        tokens[role] = (await created(tocsin, "/tokens", {"user_id": user["id"]}))["token"]
    return tokens


async def seed(tocsin: Running) -> dict[str, int]:
    """An object for every path id; `victim_*` ones are for the calls that change or delete."""
    integration = await created(tocsin, "/integrations", integration_body("seed"))
    victim = await created(tocsin, "/integrations", integration_body("victim"))
    await tocsin.report_hits([hit()])
    delivery = await first_delivery(tocsin, integration["id"])
    user = await created(tocsin, "/users", {"email": "u@example.com", "name": "u", "role": DEPLOY})
    victim_user = await created(
        tocsin, "/users", {"email": "v@example.com", "name": "v", "role": DEPLOY}
    )
    token = await created(tocsin, "/tokens", {"name": "victim"})
    application = await created(tocsin, "/applications", {"id": 7, "name": "shop"})
    victim_application = await created(tocsin, "/applications", {"id": 8, "name": "blog"})
    entry = await created(tocsin, "/denylist", {"ip": "203.0.113.9", "lock_time": 600})
    trigger = await created(tocsin, "/triggers", trigger_body("seed"))
    victim_trigger = await created(tocsin, "/triggers", trigger_body("victim"))
    return {
        "integration_id": integration["id"],
        "victim_integration_id": victim["id"],
        "delivery_id": delivery,
        "user_id": user["id"],
        "victim_user_id": victim_user["id"],
        "victim_token_id": token["id"],
        "application_id": application["id"],
        "victim_application_id": victim_application["id"],
        "victim_entry_id": entry["id"],
        "trigger_id": trigger["id"],
        "victim_trigger_id": victim_trigger["id"],
    }


async def test_every_route_against_every_role(tocsin: Running) -> None:
    tokens = await role_tokens(tocsin)
    ids = await seed(tocsin)
    wrong: list[str] = []
    for call in MATRIX:
        for role in ROLES:
            url = "/api/v1" + call.path.format(**ids)
            body = call.body(role)
            response = await tocsin.api.request(
                call.method, url, json=body, headers=bearer(tokens[role])
            )
            status = response.status_code
            cell = f"{call.method} {call.path} as {role}: {status} {response.text[:200]}"
            if role in call.allowed:
                if status in (401, 403) or status >= 500:
                    wrong.append(f"allowed, got {cell}")
            elif status != 403 or response.json()["error"]["code"] != "forbidden":
                wrong.append(f"refused expected, got {cell}")
    assert wrong == []


async def test_what_a_role_was_refused_is_unchanged(tocsin: Running) -> None:
    """403 comes before any change: a deploy token cannot delete or rename, an analyst
    cannot disable."""
    tokens = await role_tokens(tocsin)
    ids = await seed(tocsin)
    where = f"/api/v1/integrations/{ids['integration_id']}"
    before = (await tocsin.api.get(where)).json()
    for role in (DEPLOY, READ_ONLY, ANALYST, API_DEVELOPER):
        headers = bearer(tokens[role])
        assert (await tocsin.api.delete(where, headers=headers)).status_code == 403
        assert (await tocsin.api.post(f"{where}/disable", headers=headers)).status_code == 403
        patched = await tocsin.api.patch(where, json={"name": "x"}, headers=headers)
        assert patched.status_code == 403
    assert (await tocsin.api.get(where)).json() == before


# --------------------------------------------------------------------------- masking


async def test_read_only_sees_header_values_and_the_signing_secret_masked(
    tocsin: Running,
) -> None:
    tokens = await role_tokens(tocsin)
    created_integration = await tocsin.create_integration(
        TARGET, headers={"Authorization": "Bearer receiver-key", "X-Team": "blue"}
    )
    where = f"/api/v1/integrations/{created_integration['id']}"
    secret = created_integration["signing_secret"]
    assert secret.startswith("whsec_")
    masked = {"Authorization": "***", "X-Team": "***"}

    for role, headers, shown_secret in (
        (READ_ONLY, masked, "***"),
        (ANALYST, created_integration["headers"], secret),
        (API_DEVELOPER, created_integration["headers"], secret),
        (ADMINISTRATOR, created_integration["headers"], secret),
    ):
        one = (await tocsin.api.get(where, headers=bearer(tokens[role]))).json()
        [listed] = (
            await tocsin.api.get("/api/v1/integrations", headers=bearer(tokens[role]))
        ).json()
        for shown in (one, listed):
            assert shown["headers"] == headers, role
            assert shown["signing_secret"] == shown_secret, role
            assert shown["url"] == TARGET
    assert created_integration["headers"] == {
        "Authorization": "Bearer receiver-key",
        "X-Team": "blue",
    }


# --------------------------------------------------------------------------- clients


async def other_client(tocsin: Running) -> dict[str, Any]:
    """Client B, made by the operator, with one object of each kind."""
    made = await created(
        tocsin,
        "/clients",
        {"name": "Globex", "cloud": "US", "admin_email": "ops@globex.example"},
        OPERATOR_TOKEN,
    )
    token = made["token"]
    integration = await created(tocsin, "/integrations", integration_body("b"), token)
    await created(tocsin, "/hits", [hit()], token)
    delivery = await first_delivery(tocsin, integration["id"], token)
    user = await created(
        tocsin, "/users", {"email": "b@globex.example", "name": "b", "role": READ_ONLY}, token
    )
    application = await created(tocsin, "/applications", {"id": 900, "name": "b app"}, token)
    entry = await created(tocsin, "/denylist", {"ip": "192.0.2.77", "lock_time": 600}, token)
    b_token = await created(tocsin, "/tokens", {"user_id": user["id"]}, token)
    return {
        "client": made,
        "token": token,
        "integration_id": integration["id"],
        "delivery_id": delivery,
        "user_id": user["id"],
        "application_id": application["id"],
        "entry_id": entry["id"],
        "token_id": b_token["id"],
    }


REACHING_INTO_B = [
    ("GET", "/integrations/{integration_id}", None),
    ("PUT", "/integrations/{integration_id}", integration_body("a")),
    ("PATCH", "/integrations/{integration_id}", {"name": "taken"}),
    ("POST", "/integrations/{integration_id}/disable", None),
    ("POST", "/integrations/{integration_id}/enable", None),
    ("POST", "/integrations/{integration_id}/rotate-secret", None),
    ("POST", "/integrations/{integration_id}/test", None),
    ("GET", "/integrations/{integration_id}/deliveries", None),
    ("DELETE", "/integrations/{integration_id}", None),
    ("GET", "/deliveries/{delivery_id}", None),
    ("POST", "/deliveries/{delivery_id}/resend", None),
    ("GET", "/users/{user_id}", None),
    ("PATCH", "/users/{user_id}", {"role": ADMINISTRATOR}),
    ("DELETE", "/users/{user_id}", None),
    ("GET", "/applications/{application_id}", None),
    ("PUT", "/applications/{application_id}", {"name": "taken"}),
    ("PATCH", "/applications/{application_id}", {"name": "taken"}),
    ("DELETE", "/applications/{application_id}", None),
    ("DELETE", "/denylist/{entry_id}", None),
    ("DELETE", "/tokens/{token_id}", None),
]


def settled(shown: dict[str, Any]) -> dict[str, Any]:
    """What a call could have changed; an integration's status and last error move with
    its deliveries (its target never answers)."""
    return {key: value for key, value in shown.items() if key not in ("status", "last_error")}


@pytest.mark.parametrize("role", [ADMINISTRATOR, ANALYST])
async def test_a_token_never_reaches_another_clients_objects(
    start_tocsin: StartTocsin, role: str
) -> None:
    tocsin = await start_tocsin(operator_token=OPERATOR_TOKEN)
    b = await other_client(tocsin)
    own = ADMIN_TOKEN if role == ADMINISTRATOR else (await role_tokens(tocsin))[role]
    before = {
        path: (
            await tocsin.api.get(f"/api/v1{path.format(**b)}", headers=bearer(b["token"]))
        ).json()
        for path in (
            "/integrations/{integration_id}",
            "/users/{user_id}",
            "/applications/{application_id}",
        )
    }
    for method, path, body in REACHING_INTO_B:
        url = "/api/v1" + path.format(**b)
        response = await tocsin.api.request(method, url, json=body, headers=bearer(own))
        # 404 where the role may make the call, as for an id that does not exist; where it
        # may not, 403 as for any id: neither tells that client B's object exists.
        missing = await tocsin.api.request(
            method,
            "/api/v1" + path.format(**dict.fromkeys(b, 999_999)),
            json=body,
            headers=bearer(own),
        )
        assert response.status_code in (403, 404), (method, path, response.text)
        assert response.status_code == missing.status_code, (method, path, response.text)
        if role == ADMINISTRATOR:
            assert response.status_code == 404, (method, path, response.text)

    # A's lists show none of B's objects, and A cannot hand B's objects out.
    for path in ("/integrations", "/users", "/applications", "/denylist"):
        listed = (await tocsin.api.get(f"/api/v1{path}", headers=bearer(own))).json()
        assert all(item.get("name") not in ("by b", "b", "b app") for item in listed), listed
        assert all(item.get("ip") != "192.0.2.77" for item in listed), listed
    if role == ADMINISTRATOR:
        response = await tocsin.api.post(
            "/api/v1/tokens", json={"user_id": b["user_id"]}, headers=bearer(own)
        )
        assert response.status_code == 422
        assert response.json()["error"]["field"] == "user_id"
        response = await tocsin.api.post(
            "/api/v1/denylist",
            json={"ip": "192.0.2.78", "lock_time": 60, "application": b["application_id"]},
            headers=bearer(own),
        )
        assert response.status_code == 422
        assert response.json()["error"]["field"] == "application"

    # Client B's objects are as they were, and its token still works.
    for path, shown in before.items():
        again = await tocsin.api.get(f"/api/v1{path.format(**b)}", headers=bearer(b["token"]))
        assert again.status_code == 200
        assert settled(again.json()) == settled(shown)
    b_tokens = (await tocsin.api.get("/api/v1/tokens", headers=bearer(b["token"]))).json()
    assert all(token["active"] for token in b_tokens)


async def test_clients_refuse_client_tokens_and_answer_the_operator(
    start_tocsin: StartTocsin,
) -> None:
    tocsin = await start_tocsin(operator_token=OPERATOR_TOKEN)
    b = await other_client(tocsin)
    ids = {"client_id": b["client"]["id"]}
    transport = httpx.ASGITransport(app=create_app(tocsin.runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://tocsin.test") as anon:
        for call in CLIENT_CALLS:
            url = "/api/v1" + call.path.format(**ids)
            body = call.body(ADMINISTRATOR)
            for token in (ADMIN_TOKEN, b["token"]):
                response = await anon.request(call.method, url, json=body, headers=bearer(token))
                assert response.status_code == 403, (call, response.text)
                assert response.json()["error"]["code"] == "forbidden"
            response = await anon.request(call.method, url, json=body)
            assert response.status_code == 401, (call, response.text)
            assert response.json()["error"]["code"] == "unauthorized"
            response = await anon.request(
                call.method, url, json=body, headers=bearer(OPERATOR_TOKEN)
            )
            assert response.status_code in (200, 201), (call, response.text)
        # ... and the operator token reaches nothing of a client's.
        for method, path in (("GET", "/integrations"), ("GET", "/users"), ("POST", "/hits")):
            response = await anon.request(
                method, f"/api/v1{path}", json=[], headers=bearer(OPERATOR_TOKEN)
            )
            assert response.status_code == 401, (path, response.text)


async def test_clients_are_refused_when_no_operator_token_is_set(tocsin: Running) -> None:
    response = await tocsin.api.get("/api/v1/clients", headers=bearer(ADMIN_TOKEN))
    assert response.status_code == 403
    assert "TOCSIN_OPERATOR_TOKEN" in response.json()["error"]["message"]
