"""Users, tokens, applications, the denylist, scope and API changes, limits and metrics,
as a user meets them: through the API, with real receivers for the notifications."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ADMIN_TOKEN, MakeReceiver, Running, ShiftedClock, StartTocsin, hit
from tocsin.receiver import Receiver

ACTOR = "Administrator <admin@localhost>"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def notifications(receiver: Receiver) -> list[dict[str, Any]]:
    return [item for request in receiver.requests for item in orjson.loads(request.body)]


def of_type(receiver: Receiver, notification_type: str) -> list[dict[str, Any]]:
    return [
        item
        for item in notifications(receiver)
        if item["details"]["notification_type"] == notification_type
    ]


def types(receiver: Receiver) -> list[str]:
    return [item["details"]["notification_type"] for item in notifications(receiver)]


async def notified(receiver: Receiver, notification_type: str, count: int = 1) -> dict[str, Any]:
    """The receiver's notification of this type, once it has `count` of them: the only one,
    or, of several, the one in the latest request (one integration may have several
    requests in flight, so those can arrive in any order; wait for one before the next)."""
    arrived = await receiver.until(lambda r: len(of_type(r, notification_type)) >= count)
    assert arrived, types(receiver)
    return of_type(receiver, notification_type)[-1]


async def all_notified(
    receiver: Receiver, notification_type: str, count: int
) -> dict[str, dict[str, Any]]:
    """The receiver's `count` notifications of this type, by the name of their object."""
    await notified(receiver, notification_type, count)
    return {
        item["details"]["object"]["name"]: item for item in of_type(receiver, notification_type)
    }


async def watcher(
    tocsin: Running, receiver: Receiver, ca_pem: str, events: list[str] | None = None, **fields: Any
) -> dict[str, Any]:
    """An integration receiving `system` events (or `events`) at the receiver."""
    return await tocsin.create_integration(
        receiver.url, ca_certificate=ca_pem, events=events or ["system"], **fields
    )


async def created(tocsin: Running, path: str, body: Any, token: str = ADMIN_TOKEN) -> Any:
    response = await tocsin.api.post(f"/api/v1{path}", json=body, headers=bearer(token))
    assert response.status_code in (201, 202), response.text
    return response.json()


def assert_error(response: httpx.Response, status: int, field: str | None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["field"] == field, error
    assert error["message"]
    return error


def assert_recent(iso_time: str) -> None:
    """An ISO 8601 time with a zone, within a minute of now."""
    when = dt.datetime.fromisoformat(iso_time)
    assert when.tzinfo is not None
    assert abs(when.timestamp() - time.time()) < 60


def assert_system_notice(
    notice: dict[str, Any], notification_type: str, headline: str, names: list[str]
) -> None:
    """SPEC 2.5: shaped like 2.2, naming the object, who did it and when."""
    assert set(notice) == {"summary", "description", "details"}
    assert notice["summary"] == f"[Wallarm] {headline}"
    details = notice["details"]
    assert details["notification_type"] == notification_type
    assert details["client_name"] == "TestCompany"
    assert details["cloud"] == "EU"
    assert details["actor"] == ACTOR
    assert_recent(details["time"])
    description = notice["description"]
    assert description.startswith(f"Notification type: {notification_type}\n\n")
    assert description.endswith("Client: TestCompany\nCloud: EU\n")
    for name in [*names, ACTOR, details["time"]]:
        assert name in description, (name, description)


# --------------------------------------------------------------------------- users


async def test_creating_a_user_notifies_system_integrations(
    tocsin: Running, receiver: Receiver, ca_pem: str
) -> None:
    await watcher(tocsin, receiver, ca_pem)
    user = await created(
        tocsin, "/users", {"email": "Ana@Example.com", "name": "Ana Lyst", "role": "analyst"}
    )
    assert user["email"] == "ana@example.com"
    assert user["role"] == "analyst"

    notice = await notified(receiver, "user_created")
    assert_system_notice(
        notice,
        "user_created",
        "New user was added to the company account",
        ["Ana Lyst <ana@example.com>", "Analyst"],
    )
    assert notice["details"]["object"] == {
        "type": "user",
        "id": user["id"],
        "name": "Ana Lyst",
        "email": "ana@example.com",
    }
    assert notice["details"]["user"]["role"] == "analyst"


async def test_role_changes_and_deletion_notify(
    tocsin: Running, receiver: Receiver, ca_pem: str
) -> None:
    await watcher(tocsin, receiver, ca_pem)
    user = await created(
        tocsin, "/users", {"email": "bo@example.com", "name": "Bo", "role": "deploy"}
    )
    where = f"/api/v1/users/{user['id']}"
    await notified(receiver, "user_created")

    changed = await tocsin.api.patch(where, json={"role": "api_developer"})
    assert changed.status_code == 200, changed.text
    assert changed.json()["role"] == "api_developer"
    notice = await notified(receiver, "user_role_changed")
    assert_system_notice(
        notice, "user_role_changed", "User role was changed", ["Bo <bo@example.com>"]
    )
    assert "from Deploy to API developer" in notice["description"]
    assert notice["details"]["previous_role"] == "deploy"
    assert notice["details"]["user"]["role"] == "api_developer"

    same = await tocsin.api.patch(where, json={"role": "api_developer"})
    assert same.status_code == 200  # no change, no notification (checked below)
    assert (await tocsin.api.delete(where)).status_code == 204
    notice = await notified(receiver, "user_deleted")
    assert_system_notice(
        notice, "user_deleted", "User was deleted from the company account", ["Bo <bo@example.com>"]
    )
    assert_error(await tocsin.api.get(where), 404, None)
    assert_error(await tocsin.api.delete(where), 404, None)
    # The unchanged role was ingested before the deletion, so by now its notification
    # would be here or on its way: none came.
    user_types = [kind for kind in types(receiver) if kind.startswith("user_")]
    assert sorted(user_types) == ["user_created", "user_deleted", "user_role_changed"]


async def test_a_taken_email_is_a_conflict(tocsin: Running) -> None:
    await created(tocsin, "/users", {"email": "cy@example.com", "name": "Cy", "role": "analyst"})
    response = await tocsin.api.post(
        "/api/v1/users", json={"email": "CY@example.com", "name": "Cy 2", "role": "deploy"}
    )
    assert_error(response, 409, None)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param(
            {"email": "not-an-email", "name": "x", "role": "analyst"}, "email", id="email"
        ),
        pytest.param({"email": "x@example.com", "name": "x", "role": "root"}, "role", id="role"),
        pytest.param({"email": "x@example.com", "name": "", "role": "analyst"}, "name", id="name"),
        pytest.param({"email": "x@example.com", "name": "x"}, "role", id="no-role"),
    ],
)
async def test_bad_users_are_refused_naming_the_field(
    tocsin: Running, body: dict[str, Any], field: str
) -> None:
    assert_error(await tocsin.api.post("/api/v1/users", json=body), 422, field)


async def admin_id(tocsin: Running) -> int:
    users = (await tocsin.api.get("/api/v1/users")).json()
    return int(next(user["id"] for user in users if user["email"] == "admin@localhost"))


async def test_the_last_administrator_can_be_neither_deleted_nor_demoted(tocsin: Running) -> None:
    me = f"/api/v1/users/{await admin_id(tocsin)}"
    assert_error(await tocsin.api.delete(me), 409, None)
    assert_error(await tocsin.api.patch(me, json={"role": "analyst"}), 409, None)
    assert (await tocsin.api.get(me)).json()["role"] == "administrator"

    second = await created(
        tocsin, "/users", {"email": "di@example.com", "name": "Di", "role": "administrator"}
    )
    other = f"/api/v1/users/{second['id']}"
    # With two administrators, either may go; then the one left is the last again.
    assert (await tocsin.api.patch(other, json={"role": "analyst"})).status_code == 200
    assert_error(await tocsin.api.patch(me, json={"role": "analyst"}), 409, None)
    assert (await tocsin.api.patch(other, json={"role": "administrator"})).status_code == 200
    assert (await tocsin.api.delete(other)).status_code == 204
    assert_error(await tocsin.api.delete(me), 409, None)
    assert (await tocsin.api.get("/api/v1/users")).status_code == 200  # the token still works


# --------------------------------------------------------------------------- tokens


async def test_tokens_work_are_listed_without_secret_and_revoke_at_once(tocsin: Running) -> None:
    user = await created(
        tocsin, "/users", {"email": "ed@example.com", "name": "Ed", "role": "analyst"}
    )
    made = await created(tocsin, "/tokens", {"user_id": user["id"], "name": "laptop"})
    secret = made["token"]
    assert secret.startswith("tcs_")
    assert made["user_id"] == user["id"]
    assert made["name"] == "laptop"
    assert made["active"] is True
    assert made["revoked_at"] is None

    assert (await tocsin.api.get("/api/v1/users", headers=bearer(secret))).status_code == 200
    listed = await tocsin.api.get("/api/v1/tokens")
    assert secret not in listed.text
    [shown] = [token for token in listed.json() if token["id"] == made["id"]]
    assert "token" not in shown
    assert shown == {key: value for key, value in made.items() if key != "token"}

    assert (await tocsin.api.delete(f"/api/v1/tokens/{made['id']}")).status_code == 204
    assert_error(await tocsin.api.get("/api/v1/users", headers=bearer(secret)), 401, None)
    [revoked] = [
        t for t in (await tocsin.api.get("/api/v1/tokens")).json() if t["id"] == made["id"]
    ]
    assert revoked["active"] is False
    assert revoked["revoked_at"] is not None
    # Revoking again changes nothing (the first revocation time stays).
    assert (await tocsin.api.delete(f"/api/v1/tokens/{made['id']}")).status_code == 204
    [again] = [t for t in (await tocsin.api.get("/api/v1/tokens")).json() if t["id"] == made["id"]]
    assert again == revoked
    assert_error(await tocsin.api.delete("/api/v1/tokens/999999"), 404, None)


async def test_a_token_without_user_id_belongs_to_the_caller(tocsin: Running) -> None:
    made = await created(tocsin, "/tokens", {})
    assert made["user_id"] == await admin_id(tocsin)
    assert (
        await tocsin.api.get("/api/v1/tokens", headers=bearer(made["token"]))
    ).status_code == 200


async def test_an_expired_token_is_unauthorized(start_tocsin: StartTocsin) -> None:
    clock = ShiftedClock()
    tocsin = await start_tocsin(clock=clock)
    expires = time.time() + 60
    iso = dt.datetime.fromtimestamp(expires, tz=dt.UTC).isoformat()
    made = await created(tocsin, "/tokens", {"name": "short", "expires_at": iso})
    assert made["expires_at"] == pytest.approx(expires, abs=1)
    unix = await created(tocsin, "/tokens", {"name": "unix", "expires_at": expires})
    assert unix["expires_at"] == pytest.approx(expires, abs=1)
    assert (await tocsin.api.get("/api/v1/users", headers=bearer(made["token"]))).status_code == 200

    clock.advance(61)
    for secret in (made["token"], unix["token"]):
        assert_error(await tocsin.api.get("/api/v1/users", headers=bearer(secret)), 401, None)
    listed = {t["id"]: t for t in (await tocsin.api.get("/api/v1/tokens")).json()}
    assert listed[made["id"]]["active"] is False
    assert listed[made["id"]]["revoked_at"] is None


@pytest.mark.parametrize("ago", [1, 3600])
async def test_a_token_expiring_in_the_past_is_refused(tocsin: Running, ago: int) -> None:
    response = await tocsin.api.post("/api/v1/tokens", json={"expires_at": time.time() - ago})
    assert_error(response, 422, "expires_at")


async def test_deleting_a_user_revokes_its_tokens(tocsin: Running) -> None:
    user = await created(
        tocsin, "/users", {"email": "fa@example.com", "name": "Fa", "role": "deploy"}
    )
    secret = (await created(tocsin, "/tokens", {"user_id": user["id"]}))["token"]
    assert (
        await tocsin.api.post("/api/v1/hits", json=[hit()], headers=bearer(secret))
    ).status_code == 202
    assert (await tocsin.api.delete(f"/api/v1/users/{user['id']}")).status_code == 204
    response = await tocsin.api.post("/api/v1/hits", json=[hit()], headers=bearer(secret))
    assert_error(response, 401, None)
    tokens = (await tocsin.api.get("/api/v1/tokens")).json()
    assert all(token["user_id"] != user["id"] or not token["active"] for token in tokens)


async def test_a_token_for_an_unknown_user_is_refused(tocsin: Running) -> None:
    response = await tocsin.api.post("/api/v1/tokens", json={"user_id": 999_999})
    assert_error(response, 422, "user_id")


# --------------------------------------------------------------------------- integrations


async def test_disabling_an_integration_tells_the_others_and_not_itself(
    tocsin: Running, make_receiver: MakeReceiver, ca_pem: str
) -> None:
    x_receiver, y_receiver = make_receiver(), make_receiver()
    x = await watcher(tocsin, x_receiver, ca_pem, name="X")
    await watcher(tocsin, y_receiver, ca_pem, name="Y")
    await notified(x_receiver, "integration_created", 2)  # X hears of itself and of Y

    assert (await tocsin.api.post(f"/api/v1/integrations/{x['id']}/disable")).status_code == 200
    notice = await notified(y_receiver, "integration_disabled")
    assert_system_notice(notice, "integration_disabled", "Integration was disabled", ['"X"'])
    assert notice["details"]["object"] == {"type": "integration", "id": x["id"], "name": "X"}

    # Re-enabled, X hears of that (so it would have heard of the disabling by now) ...
    assert (await tocsin.api.post(f"/api/v1/integrations/{x['id']}/enable")).status_code == 200
    await notified(x_receiver, "integration_enabled")
    await notified(y_receiver, "integration_enabled")
    # ... and was never told of its own disabling, not even as a cancelled delivery.
    assert "integration_disabled" not in types(x_receiver)
    log = (await tocsin.api.get(f"/api/v1/integrations/{x['id']}/deliveries")).json()["items"]
    assert "cancelled" not in [delivery["status"] for delivery in log], log


async def test_deleting_an_integration_tells_the_others_and_not_itself(
    tocsin: Running, make_receiver: MakeReceiver, ca_pem: str
) -> None:
    x_receiver, y_receiver = make_receiver(), make_receiver()
    x = await watcher(tocsin, x_receiver, ca_pem, name="X")
    await watcher(tocsin, y_receiver, ca_pem, name="Y")
    await notified(x_receiver, "integration_created", 2)

    assert (await tocsin.api.delete(f"/api/v1/integrations/{x['id']}")).status_code == 204
    notice = await notified(y_receiver, "integration_deleted")
    assert_system_notice(notice, "integration_deleted", "Integration was deleted", ['"X"'])
    assert notice["details"]["object"]["id"] == x["id"]
    # Y's next notification comes after X's would have: X received nothing more.
    await created(tocsin, "/applications", {"name": "later"})
    await notified(y_receiver, "application_created")
    assert types(x_receiver) == ["integration_created", "integration_created"]


# --------------------------------------------------------------------------- applications


async def test_applications_created_changed_and_deleted_notify(
    tocsin: Running, receiver: Receiver, ca_pem: str
) -> None:
    await watcher(tocsin, receiver, ca_pem)
    app = await created(tocsin, "/applications", {"id": 12, "name": "Web shop"})
    assert app["id"] == 12
    assert app["name"] == "Web shop"
    auto = await created(tocsin, "/applications", {"name": "Blog"})
    assert auto["id"] == 13  # the next free id
    assert_error(
        await tocsin.api.post("/api/v1/applications", json={"id": 12, "name": "again"}), 409, None
    )
    where = f"/api/v1/applications/{app['id']}"
    assert (await tocsin.api.patch(where, json={"name": "Shop"})).json()["name"] == "Shop"
    assert (await tocsin.api.put(where, json={"name": "Store"})).json()["name"] == "Store"
    assert (await tocsin.api.get(where)).json()["name"] == "Store"
    assert (await tocsin.api.delete(where)).status_code == 204
    assert_error(await tocsin.api.get(where), 404, None)
    assert [a["id"] for a in (await tocsin.api.get("/api/v1/applications")).json()] == [13]

    made = await all_notified(receiver, "application_created", 2)
    assert_system_notice(made["Blog"], "application_created", "Application was created", ['"Blog"'])
    assert made["Web shop"]["details"]["object"] == {
        "type": "application",
        "id": 12,
        "name": "Web shop",
    }
    changes = await all_notified(receiver, "application_changed", 2)
    changed = changes["Store"]
    assert_system_notice(changed, "application_changed", "Application was changed", ['"Store"'])
    assert '(renamed from "Shop")' in changed["description"]
    assert changed["details"]["previous_name"] == "Shop"
    deleted = await notified(receiver, "application_deleted")
    assert_system_notice(deleted, "application_deleted", "Application was deleted", ['"Store"'])
    assert deleted["details"]["object"] == {"type": "application", "id": 12, "name": "Store"}


# --------------------------------------------------------------------------- scope and API


async def test_scope_changes_reach_scope_integrations_only(
    tocsin: Running, make_receiver: MakeReceiver, ca_pem: str
) -> None:
    scope_receiver, system_receiver = make_receiver(), make_receiver()
    await watcher(tocsin, scope_receiver, ca_pem, events=["scope"], name="scope")
    await watcher(tocsin, system_receiver, ca_pem, events=["system"], name="system")
    body = {
        "hosts": {"added": ["203.0.113.9"]},
        "services": {"removed": ["203.0.113.9:8443"]},
        "domains": {"changed": ["shop.example.com"]},
    }
    response = await tocsin.api.post("/api/v1/scope-changes", json=body)
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 1}

    notice = await notified(scope_receiver, "scope_changed")
    assert notice["summary"] == "[Wallarm] Scope was changed"
    assert notice["details"]["scope"]["hosts"]["added"] == ["203.0.113.9"]
    assert notice["details"]["scope"]["services"]["removed"] == ["203.0.113.9:8443"]
    assert notice["details"]["object"] == {"type": "scope", "changes": 3}
    assert notice["details"]["actor"] == ACTOR
    assert_recent(notice["details"]["time"])
    assert "Hosts added: 203.0.113.9" in notice["description"]
    assert "Domains changed: shop.example.com" in notice["description"]

    # The system integration hears of the next change, and of no scope change before it.
    await created(tocsin, "/applications", {"name": "later"})
    await notified(system_receiver, "application_created")
    assert "scope_changed" not in types(system_receiver)
    assert types(scope_receiver) == ["scope_changed"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({}, "body", id="empty"),
        pytest.param({"hosts": {"added": []}}, "body", id="no-entries"),
        pytest.param({"hosts": {"added": ["a\nb"]}}, "hosts.added[0]", id="control-character"),
        pytest.param({"planets": {"added": ["mars"]}}, "planets", id="unknown-kind"),
    ],
)
async def test_bad_scope_changes_are_refused(
    tocsin: Running, body: dict[str, Any], field: str
) -> None:
    assert_error(await tocsin.api.post("/api/v1/scope-changes", json=body), 422, field)


async def test_api_changes_are_accepted_with_their_count(tocsin: Running) -> None:
    body = {
        "changes": [
            {"change": "new", "method": "POST", "path": "/api/v2/orders", "domain": "a.example"},
            {"change": "unused", "method": "GET", "path": "/api/v1/legacy", "application": 3},
        ],
        "rogue_apis": [{"kind": "shadow", "method": "GET", "path": "/internal/debug"}],
    }
    response = await tocsin.api.post("/api/v1/api-changes", json=body)
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 3}
    assert_error(await tocsin.api.post("/api/v1/api-changes", json={}), 422, "body")
    bad = {"changes": [{"change": "renamed", "method": "GET", "path": "/"}]}
    assert_error(await tocsin.api.post("/api/v1/api-changes", json=bad), 422, "changes[0].change")


# --------------------------------------------------------------------------- denylist


async def test_denylist_add_list_conflict_and_remove(tocsin: Running) -> None:
    await created(tocsin, "/applications", {"id": 5, "name": "shop"})
    before = time.time()
    locked = await created(
        tocsin,
        "/denylist",
        {"ip": "198.51.100.7", "lock_time": 3600, "reason": "stuffing", "application": 5},
    )
    assert locked["ip"] == "198.51.100.7"
    assert locked["application"] == 5
    assert locked["reason"] == "stuffing"
    assert locked["created_by"] == ACTOR
    assert before + 3600 - 1 <= locked["expire_at"] <= time.time() + 3600 + 1
    until = time.time() + 7200
    iso = dt.datetime.fromtimestamp(until, tz=dt.UTC).isoformat()
    dated = await created(tocsin, "/denylist", {"ip": "2001:DB8:0::1", "expire_at": iso})
    assert dated["ip"] == "2001:db8::1"  # canonical form
    assert dated["expire_at"] == pytest.approx(until, abs=1)
    assert dated["application"] is None

    # An active entry for the same address and application is a conflict; another
    # application, or none, is another entry.
    again = await tocsin.api.post(
        "/api/v1/denylist", json={"ip": "198.51.100.7", "lock_time": 60, "application": 5}
    )
    assert_error(again, 409, None)
    same_v6 = await tocsin.api.post("/api/v1/denylist", json={"ip": "2001:db8::1", "lock_time": 9})
    assert_error(same_v6, 409, None)
    everywhere = await created(tocsin, "/denylist", {"ip": "198.51.100.7", "lock_time": 60})
    # An IPv4 address written as IPv4-mapped IPv6 is the same address.
    mapped = await tocsin.api.post(
        "/api/v1/denylist", json={"ip": "::ffff:198.51.100.7", "lock_time": 60}
    )
    assert_error(mapped, 409, None)

    listed = (await tocsin.api.get("/api/v1/denylist")).json()
    assert sorted(entry["id"] for entry in listed) == sorted(
        [locked["id"], dated["id"], everywhere["id"]]
    )
    assert next(entry for entry in listed if entry["id"] == locked["id"]) == locked

    assert (await tocsin.api.delete(f"/api/v1/denylist/{locked['id']}")).status_code == 204
    assert_error(await tocsin.api.delete(f"/api/v1/denylist/{locked['id']}"), 404, None)
    listed = (await tocsin.api.get("/api/v1/denylist")).json()
    assert locked["id"] not in [entry["id"] for entry in listed]
    # Removed, the address may be denylisted again.
    await created(tocsin, "/denylist", {"ip": "198.51.100.7", "lock_time": 60, "application": 5})


async def test_an_expired_denylist_entry_drops_out(start_tocsin: StartTocsin) -> None:
    clock = ShiftedClock()
    tocsin = await start_tocsin(clock=clock)
    short = await created(tocsin, "/denylist", {"ip": "192.0.2.1", "lock_time": 30})
    long = await created(tocsin, "/denylist", {"ip": "192.0.2.2", "lock_time": 3600})
    clock.advance(31)
    listed = (await tocsin.api.get("/api/v1/denylist")).json()
    assert [entry["id"] for entry in listed] == [long["id"]]
    # Expired, it is no conflict any more, and no longer there to remove.
    await created(tocsin, "/denylist", {"ip": "192.0.2.1", "lock_time": 30})
    assert_error(await tocsin.api.delete(f"/api/v1/denylist/{short['id']}"), 404, None)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"ip": "300.1.2.3", "lock_time": 60}, "ip", id="ip-out-of-range"),
        pytest.param({"ip": "10.0.0.0/8", "lock_time": 60}, "ip", id="ip-network"),
        pytest.param({"ip": "example.com", "lock_time": 60}, "ip", id="ip-name"),
        pytest.param({"ip": "", "lock_time": 60}, "ip", id="ip-empty"),
        pytest.param({"ip": "fe80::1%eth0", "lock_time": 60}, "ip", id="ip-zone"),
        pytest.param({"ip": "fe80::1%\u202eevil", "lock_time": 60}, "ip", id="ip-zone-bidi"),
        pytest.param({"lock_time": 60}, "ip", id="ip-missing"),
        pytest.param(
            {"ip": "192.0.2.1", "lock_time": 60, "expire_at": 4_000_000_000},
            "lock_time",
            id="both",
        ),
        pytest.param({"ip": "192.0.2.1"}, "expire_at", id="neither"),
        pytest.param({"ip": "192.0.2.1", "expire_at": 1_000_000_000}, "expire_at", id="past"),
        pytest.param({"ip": "192.0.2.1", "expire_at": "soon"}, "expire_at", id="not-a-time"),
        pytest.param({"ip": "192.0.2.1", "lock_time": 0}, "lock_time", id="lock-time-0"),
        pytest.param({"ip": "192.0.2.1", "lock_time": "60"}, "lock_time", id="lock-time-text"),
        pytest.param(
            {"ip": "192.0.2.1", "lock_time": 60, "application": 404},
            "application",
            id="unknown-app",
        ),
        pytest.param({"ip": "192.0.2.1", "lock_time": 60, "colour": "red"}, "colour", id="extra"),
    ],
)
async def test_bad_denylist_entries_are_refused_naming_the_field(
    tocsin: Running, body: dict[str, Any], field: str
) -> None:
    assert_error(await tocsin.api.post("/api/v1/denylist", json=body), 422, field)
    assert (await tocsin.api.get("/api/v1/denylist")).json() == []


# --------------------------------------------------------------------------- limits


async def test_a_token_past_its_ingest_rate_gets_429_and_others_do_not(
    start_tocsin: StartTocsin,
) -> None:
    clock = ShiftedClock()
    tocsin = await start_tocsin(clock=clock, ingest_rate=2, ingest_burst=4)
    other = (await created(tocsin, "/tokens", {"name": "sensor 2"}))["token"]

    # A request within the rate is admitted whatever its size; the next waits.
    await tocsin.report_hits([hit(path=f"/{n}") for n in range(10)])
    refused = await tocsin.api.post("/api/v1/hits", json=[hit()])
    error = assert_error(refused, 429, None)
    assert error["code"] == "rate_limited"
    retry_after = int(refused.headers["Retry-After"])
    assert 1 <= retry_after <= 4  # (10 - 4) / 2 s, rounded up
    for path, body in (
        ("/vulnerabilities", {"title": "t"}),
        ("/scope-changes", {"hosts": {"added": ["192.0.2.1"]}}),
        ("/api-changes", {"changes": [{"change": "new", "method": "GET", "path": "/"}]}),
        ("/denylist", {"ip": "192.0.2.1", "lock_time": 60}),
    ):
        assert (await tocsin.api.post(f"/api/v1{path}", json=body)).status_code == 429, path

    # Another token (of the same user) has a rate of its own.
    response = await tocsin.api.post("/api/v1/hits", json=[hit()], headers=bearer(other))
    assert response.status_code == 202, response.text
    # Refused events were not stored.
    assert (await metrics(tocsin))[("tocsin_events_accepted_total", (("type", "hit"),))] == 11

    clock.advance(retry_after)
    response = await tocsin.api.post("/api/v1/hits", json=[hit()])
    assert response.status_code == 202, response.text


def streamed(data: bytes) -> Callable[[], Any]:
    """A body sent in chunks without Content-Length, as a client streaming it would."""

    async def chunks() -> Any:
        for start in range(0, len(data), 1000):
            yield data[start : start + 1000]

    return chunks


async def test_bodies_over_the_limit_get_413_and_store_nothing(
    start_tocsin: StartTocsin, receiver: Receiver, ca_pem: str
) -> None:
    tocsin = await start_tocsin(max_body_bytes=4096)
    sink = await tocsin.create_integration(receiver.url, ca_certificate=ca_pem, events=["hit"])
    big_hits = orjson.dumps([hit(path=f"/{n:04}") for n in range(100)])
    big_integration = orjson.dumps(
        {"name": "big", "url": receiver.url, "headers": {"X-Pad": "a" * 5000}}
    )
    assert len(big_hits) > 4096
    assert len(big_integration) > 4096
    json_type = {"Content-Type": "application/json"}
    for path, data in (("/hits", big_hits), ("/integrations", big_integration)):
        declared = await tocsin.api.post(f"/api/v1{path}", content=data, headers=json_type)
        error = assert_error(declared, 413, "body")
        assert error["code"] == "too_large"
        chunked = await tocsin.api.post(
            f"/api/v1{path}", content=streamed(data)(), headers=json_type
        )
        assert_error(chunked, 413, "body")
    big_user = {"email": "g@example.com", "name": "x" * 100, "role": "analyst", "pad": "a" * 5000}
    assert_error(await tocsin.api.post("/api/v1/users", json=big_user), 413, "body")

    assert [i["id"] for i in (await tocsin.api.get("/api/v1/integrations")).json()] == [sink["id"]]
    assert len((await tocsin.api.get("/api/v1/users")).json()) == 1
    found = await metrics(tocsin)
    assert ("tocsin_events_accepted_total", (("type", "hit"),)) not in found
    log = await tocsin.api.get(f"/api/v1/integrations/{sink['id']}/deliveries")
    assert log.json()["items"] == []
    assert receiver.count == 0
    # Under the limit, the same routes work.
    await tocsin.report_hits([hit()])


# --------------------------------------------------------------------------- metrics

Sample = tuple[str, tuple[tuple[str, str], ...]]


async def metrics(tocsin: Running) -> dict[Sample, float]:
    response = await tocsin.api.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


async def test_metrics_count_events_attempts_queue_and_integrations(
    tocsin: Running, receiver: Receiver, ca_pem: str
) -> None:
    sink = await tocsin.create_integration(receiver.url, ca_certificate=ca_pem, events=["hit"])
    await tocsin.create_integration(receiver.url, ca_certificate=ca_pem, events=[], enabled=False)
    await tocsin.report_hits([hit(path=f"/{n}") for n in range(3)])
    await tocsin.report_hits([hit(path="/4")])

    async def settled() -> list[dict[str, Any]]:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            log = (await tocsin.api.get(f"/api/v1/integrations/{sink['id']}/deliveries")).json()
            items: list[dict[str, Any]] = log["items"]
            delivered = [item for item in items if item["status"] == "delivered"]
            if sum(item["notifications"] for item in delivered) == 4:
                found = await metrics(tocsin)
                if found[("tocsin_delivery_attempts_total", (("outcome", "delivered"),))] == len(
                    delivered
                ):
                    return delivered
            await asyncio.sleep(0.05)
        pytest.fail("the hits were not delivered and counted")

    delivered = await settled()
    found = await metrics(tocsin)
    assert found[("tocsin_events_accepted_total", (("type", "hit"),))] == 4
    # Creating the two integrations: two system events (nobody subscribed to them).
    assert found[("tocsin_events_accepted_total", (("type", "system"),))] == 2
    assert found[("tocsin_delivery_attempts_total", (("outcome", "delivered"),))] == len(delivered)
    assert found.get(("tocsin_delivery_attempts_total", (("outcome", "retrying"),)), 0) == 0
    assert found[("tocsin_attempt_duration_seconds_count", ())] == len(delivered)
    assert 0 < found[("tocsin_attempt_duration_seconds_sum", ())] < 10
    assert found[("tocsin_attempt_duration_seconds_bucket", (("le", "+Inf"),))] == len(delivered)
    assert found[("tocsin_queued_notifications", ())] == 0
    assert found[("tocsin_waiting_deliveries", ())] == 0
    assert found[("tocsin_integrations", (("status", "active"),))] == 1
    assert found[("tocsin_integrations", (("status", "disabled"),))] == 1
    assert found[("tocsin_integrations", (("status", "failing"),))] == 0
    assert found[("tocsin_integrations", (("status", "auto_disabled"),))] == 0
    assert receiver.count == len(delivered)


async def test_metrics_show_the_queue_of_a_failing_integration_until_it_is_disabled(
    tocsin: Running,
) -> None:
    """A failing integration's notifications wait in the queue; disabling cancels them."""
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    sink = await tocsin.create_integration(f"https://127.0.0.1:{closed}/hook", events=["hit"])
    await tocsin.report_hits([hit(path=f"/{n}") for n in range(2)])
    retrying = ("tocsin_delivery_attempts_total", (("outcome", "retrying"),))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        # The counter moves once the attempt is written down, the status with it.
        found = await metrics(tocsin)
        if found[("tocsin_integrations", (("status", "failing"),))] == 1 and found.get(retrying):
            break
        await asyncio.sleep(0.05)
    assert found[("tocsin_integrations", (("status", "failing"),))] == 1
    assert found[retrying] >= 1
    assert found[("tocsin_queued_notifications", ())] == 2
    assert found[("tocsin_waiting_deliveries", ())] >= 1
    assert (await tocsin.api.post(f"/api/v1/integrations/{sink['id']}/disable")).status_code == 200
    found = await metrics(tocsin)
    assert found[("tocsin_queued_notifications", ())] == 0
    assert found[("tocsin_waiting_deliveries", ())] == 0
    assert found[("tocsin_integrations", (("status", "disabled"),))] == 1
    assert found[("tocsin_integrations", (("status", "failing"),))] == 0
