"""The /integrations API as a user meets it: bad input, round trips, auth, "Test integration"."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import MakeReceiver, Running, StartTocsin
from tests.golden import vector
from tocsin.api import create_app
from tocsin.receiver import Received, Receiver, Reply

BASE = "/api/v1/integrations"
TARGET = "https://127.0.0.1:8443/hook"  # never connected to: creating does not send

SPEC_FIELDS = {
    "name",
    "url",
    "method",
    "headers",
    "ca_certificate",
    "verify_tls",
    "request_timeout",
    "connection_timeout",
    "format",
    "events",
    "vuln_risk_levels",
    "enabled",
}
# Besides SPEC 3.1 and id/status/last_error, an integration shows its kind, the reason
# it is disabled (SPEC 3.3), its signing secret (SPEC 4 "Headers") and its timestamps.
SHOWN_FIELDS = SPEC_FIELDS | {"id", "status", "last_error"}
SHOWN_FIELDS |= {"type", "status_reason", "signing_secret", "created_at", "updated_at"}

DEFAULTS = {
    "method": "POST",
    "headers": {},
    "ca_certificate": None,
    "verify_tls": True,
    "request_timeout": 15,
    "connection_timeout": 20,
    "format": "json_array",
    "events": ["vuln"],
    "vuln_risk_levels": ["high", "medium", "low"],
    "enabled": True,
}


def assert_error(
    response: httpx.Response, status: int, field: str | None, code: str | None = None
) -> dict[str, Any]:
    """The response is the one error shape of the API, naming `field`."""
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"], body
    error: dict[str, Any] = body["error"]
    assert set(error) == {"code", "message", "field"}, error
    assert error["field"] == field, error
    assert isinstance(error["message"], str)
    assert error["message"]
    assert isinstance(error["code"], str)
    if code is not None:
        assert error["code"] == code, error
    return error


def valid(**fields: Any) -> dict[str, Any]:
    return {"name": "siem", "url": TARGET} | fields


# --------------------------------------------------------------------------- bad input

BAD_INPUT = [
    # url: absolute https only, no spaces or control characters, bounded
    pytest.param({"url": "/hook"}, "url", id="url-relative"),
    pytest.param({"url": "127.0.0.1/hook"}, "url", id="url-no-scheme"),
    pytest.param({"url": "ftp://127.0.0.1/hook"}, "url", id="url-ftp"),
    pytest.param({"url": "http://127.0.0.1/hook"}, "url", id="url-plain-http"),
    pytest.param({"url": "https:///hook"}, "url", id="url-no-host"),
    pytest.param({"url": "https://127.0.0.1/a b"}, "url", id="url-space"),
    pytest.param({"url": "https://127.0.0.1/a\tb"}, "url", id="url-tab"),
    pytest.param({"url": "https://127.0.0.1/a\x01"}, "url", id="url-control"),
    pytest.param({"url": "https://127.0.0.1/a\x7f"}, "url", id="url-del"),
    pytest.param({"url": "https://127.0.0.1/a\r\nX: y"}, "url", id="url-crlf"),
    pytest.param({"url": "https://127.0.0.1/a\x85"}, "url", id="url-c1-control"),
    pytest.param({"url": "https://127.0.0.1/a\u2028"}, "url", id="url-line-separator"),
    pytest.param({"url": "https://127.0.0.1/a\u00a0"}, "url", id="url-no-break-space"),
    pytest.param({"url": "https://127.0.0.1/a\u200b"}, "url", id="url-zero-width-space"),
    pytest.param({"url": "https://127.0.0.1:99999/"}, "url", id="url-bad-port"),
    pytest.param({"url": "https://127.0.0.1:0/"}, "url", id="url-port-0"),
    pytest.param({"url": "https://127.0.0.1:x/"}, "url", id="url-port-text"),
    pytest.param({"url": "https://a..b/"}, "url", id="url-host-empty-label"),
    pytest.param({"url": "https://" + "a" * 64 + ".test/"}, "url", id="url-host-label-64"),
    pytest.param({"url": "https://%31%32%37.0.0.1/"}, "url", id="url-host-percent"),
    pytest.param({"url": "https://exa<mple>.test/"}, "url", id="url-host-brackets"),
    pytest.param({"url": "https://[::1/"}, "url", id="url-ipv6-unclosed"),
    pytest.param({"url": "https://127.1/hook"}, "url", id="url-host-loopback-short-form"),
    pytest.param({"url": "https://2130706433/hook"}, "url", id="url-host-loopback-as-integer"),
    pytest.param({"url": "https://0x7f.0.0.1/hook"}, "url", id="url-host-loopback-hex"),
    pytest.param({"url": "https://127.0.0.1./hook"}, "url", id="url-host-loopback-trailing-dot"),
    pytest.param(
        {"url": "https://127\u30020\u30020\u30021/hook"},
        "url",
        id="url-host-loopback-ideographic-dots",
    ),
    pytest.param({"url": "https://[zz]/"}, "url", id="url-ipv6-bad"),
    pytest.param({"url": "https://user:pw@127.0.0.1/"}, "url", id="url-credentials"),
    pytest.param({"url": "https://127.0.0.1/" + "a" * 2031}, "url", id="url-2049-chars"),
    pytest.param({"url": ""}, "url", id="url-empty"),
    pytest.param({"url": 443}, "url", id="url-number"),
    pytest.param({"url": None}, "url", id="url-null"),
    # method
    pytest.param({"method": "GET"}, "method", id="method-get"),
    pytest.param({"method": "PATCH"}, "method", id="method-patch"),
    pytest.param({"method": ""}, "method", id="method-empty"),
    pytest.param({"method": 1}, "method", id="method-number"),
    # header names must be RFC 9110 tokens
    pytest.param({"headers": {"X Api Key": "1"}}, "headers", id="header-name-space"),
    pytest.param({"headers": {"X-Key:": "1"}}, "headers", id="header-name-colon"),
    pytest.param({"headers": {"": "1"}}, "headers", id="header-name-empty"),
    pytest.param({"headers": {"X-Clé": "1"}}, "headers", id="header-name-non-ascii"),
    pytest.param({"headers": {"X-Key\n": "1"}}, "headers", id="header-name-trailing-lf"),
    pytest.param({"headers": {"X-Key\r\nEvil": "1"}}, "headers", id="header-name-crlf"),
    pytest.param({"headers": {"(X)": "1"}}, "headers", id="header-name-parens"),
    # header values must not carry CR, LF or NUL
    pytest.param({"headers": {"X-Key": "a\r\nEvil: 1"}}, "headers", id="header-value-crlf"),
    pytest.param({"headers": {"X-Key": "a\nb"}}, "headers", id="header-value-lf"),
    pytest.param({"headers": {"X-Key": "a\rb"}}, "headers", id="header-value-cr"),
    pytest.param({"headers": {"X-Key": "a\x00b"}}, "headers", id="header-value-nul"),
    # headers the sender owns
    pytest.param({"headers": {"Host": "evil.example"}}, "headers", id="owned-host"),
    pytest.param({"headers": {"content-length": "1"}}, "headers", id="owned-content-length"),
    pytest.param({"headers": {"Transfer-Encoding": "chunked"}}, "headers", id="owned-te-chunked"),
    pytest.param({"headers": {"Connection": "close"}}, "headers", id="owned-connection"),
    pytest.param({"headers": {"Upgrade": "h2c"}}, "headers", id="owned-upgrade"),
    pytest.param({"headers": {"TE": "trailers"}}, "headers", id="owned-te"),
    pytest.param({"headers": {"Trailer": "X"}}, "headers", id="owned-trailer"),
    pytest.param({"headers": {"Keep-Alive": "timeout=5"}}, "headers", id="owned-keep-alive"),
    pytest.param({"headers": {"Proxy-Authorization": "x"}}, "headers", id="owned-proxy-auth"),
    pytest.param({"headers": {"proxy-connection": "x"}}, "headers", id="owned-proxy-lower"),
    # headers bounded to 16 KiB in all
    pytest.param({"headers": {"X-Big": "a" * 16384}}, "headers", id="headers-one-too-big"),
    pytest.param(
        {"headers": {f"X-H{i}": "a" * 1000 for i in range(17)}}, "headers", id="headers-sum-big"
    ),
    # headers wrong JSON types
    pytest.param({"headers": "Authorization: x"}, "headers", id="headers-string"),
    pytest.param({"headers": [["X-Key", "1"]]}, "headers", id="headers-array"),
    pytest.param({"headers": {"X-Key": 1}}, "headers.X-Key", id="header-value-number"),
    # ca_certificate must be a PEM certificate
    pytest.param({"ca_certificate": "not a certificate"}, "ca_certificate", id="ca-text"),
    pytest.param(
        {"ca_certificate": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"},
        "ca_certificate",
        id="ca-bad-body",
    ),
    pytest.param(
        {"ca_certificate": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"},
        "ca_certificate",
        id="ca-private-key",
    ),
    pytest.param({"ca_certificate": "\x00"}, "ca_certificate", id="ca-nul"),
    pytest.param({"ca_certificate": 5}, "ca_certificate", id="ca-number"),
    # timeouts 1..300 seconds, numbers only
    pytest.param({"request_timeout": 0}, "request_timeout", id="request-timeout-0"),
    pytest.param({"request_timeout": 0.5}, "request_timeout", id="request-timeout-half"),
    pytest.param({"request_timeout": -1}, "request_timeout", id="request-timeout-negative"),
    pytest.param({"request_timeout": 301}, "request_timeout", id="request-timeout-301"),
    pytest.param({"request_timeout": 300.5}, "request_timeout", id="request-timeout-300.5"),
    pytest.param({"request_timeout": 10**30}, "request_timeout", id="request-timeout-huge"),
    pytest.param({"request_timeout": "15"}, "request_timeout", id="request-timeout-string"),
    pytest.param({"request_timeout": True}, "request_timeout", id="request-timeout-bool"),
    pytest.param({"request_timeout": None}, "request_timeout", id="request-timeout-null"),
    pytest.param({"connection_timeout": 0}, "connection_timeout", id="connect-timeout-0"),
    pytest.param({"connection_timeout": 301}, "connection_timeout", id="connect-timeout-301"),
    pytest.param({"connection_timeout": "20"}, "connection_timeout", id="connect-timeout-str"),
    # events and risk levels
    pytest.param({"events": ["hits"]}, "events[0]", id="event-unknown"),
    pytest.param({"events": ["vuln", "attack"]}, "events[1]", id="event-unknown-second"),
    pytest.param({"events": ["VULN"]}, "events[0]", id="event-wrong-case"),
    pytest.param({"events": "vuln"}, "events", id="events-string"),
    pytest.param({"events": [1]}, "events[0]", id="event-number"),
    pytest.param({"vuln_risk_levels": ["critical"]}, "vuln_risk_levels[0]", id="risk-unknown"),
    pytest.param({"vuln_risk_levels": "high"}, "vuln_risk_levels", id="risk-string"),
    # name: required visible text up to 128 characters
    pytest.param({"name": "n" * 129}, "name", id="name-129-chars"),
    pytest.param({"name": ""}, "name", id="name-empty"),
    pytest.param({"name": "   "}, "name", id="name-blank"),
    pytest.param({"name": "a\x00b"}, "name", id="name-nul"),
    pytest.param({"name": "a\nb"}, "name", id="name-newline"),
    pytest.param({"name": 5}, "name", id="name-number"),
    pytest.param({"name": "a\x85b"}, "name", id="name-c1-control"),
    pytest.param({"name": "a\u2028b"}, "name", id="name-line-separator"),
    pytest.param({"name": "\u200b\u200e"}, "name", id="name-invisible"),
    # format, flags and the kind of integration
    pytest.param({"format": "xml"}, "format", id="format-unknown"),
    pytest.param({"verify_tls": "yes"}, "verify_tls", id="verify-tls-string"),
    pytest.param({"verify_tls": 1}, "verify_tls", id="verify-tls-number"),
    pytest.param({"enabled": "true"}, "enabled", id="enabled-string"),
    pytest.param({"type": "slack"}, "type", id="type-unknown"),
    # unknown fields are refused, not ignored
    pytest.param({"colour": "red"}, "colour", id="unknown-field"),
    pytest.param({"id": 7}, "id", id="unknown-field-id"),
    pytest.param({"status": "active"}, "status", id="unknown-field-status"),
    pytest.param({"Url": "https://127.0.0.1/"}, "Url", id="unknown-field-case"),
]


@pytest.mark.parametrize(("fields", "field"), BAD_INPUT)
async def test_create_refuses_bad_input_naming_the_field(
    tocsin: Running, fields: dict[str, Any], field: str
) -> None:
    response = await tocsin.api.post(BASE, json=valid(**fields))
    assert_error(response, 422, field)
    listed = await tocsin.api.get(BASE)
    assert listed.json() == []


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        pytest.param({"url": "https://127.0.0.1/a b"}, "url", id="url-space"),
        pytest.param({"headers": {"Host": "x"}}, "headers", id="owned-host"),
        pytest.param({"request_timeout": "15"}, "request_timeout", id="timeout-string"),
        pytest.param({"events": ["vuln", "bogus"]}, "events[1]", id="event-unknown"),
        pytest.param({"ca_certificate": "nope"}, "ca_certificate", id="ca-text"),
        pytest.param({"colour": "red"}, "colour", id="unknown-field"),
    ],
)
async def test_put_and_patch_refuse_bad_input_and_keep_the_integration(
    tocsin: Running, fields: dict[str, Any], field: str
) -> None:
    created = await tocsin.create_integration(TARGET)
    where = f"{BASE}/{created['id']}"
    assert_error(await tocsin.api.put(where, json=valid(**fields)), 422, field)
    assert_error(await tocsin.api.patch(where, json=fields), 422, field)
    assert (await tocsin.api.get(where)).json() == created


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        pytest.param({"name": None}, "name", id="name-null"),
        pytest.param({"url": None}, "url", id="url-null"),
        pytest.param({"verify_tls": "yes"}, "verify_tls", id="verify-tls-string"),
        pytest.param({"vuln_risk_levels": ["high", "severe"]}, "vuln_risk_levels[1]", id="risk"),
        pytest.param({"headers": {"X-Key": "a\r\nb"}}, "headers", id="header-crlf"),
        pytest.param({"type": "email"}, "type", id="type"),
    ],
)
async def test_patch_validates_the_merged_integration(
    tocsin: Running, fields: dict[str, Any], field: str
) -> None:
    created = await tocsin.create_integration(TARGET)
    where = f"{BASE}/{created['id']}"
    assert_error(await tocsin.api.patch(where, json=fields), 422, field)
    assert (await tocsin.api.get(where)).json() == created


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        pytest.param(b"{not json", 400, "body", id="not-json"),
        pytest.param(b"", 400, "body", id="empty"),
        pytest.param(b"[]", 422, "body", id="array"),
        pytest.param(b'"siem"', 422, "body", id="string"),
        pytest.param(b"null", 422, "body", id="null"),
    ],
)
async def test_create_and_patch_refuse_a_body_that_is_not_an_object(
    tocsin: Running, body: bytes, status: int, field: str
) -> None:
    headers = {"Content-Type": "application/json"}
    assert_error(await tocsin.api.post(BASE, content=body, headers=headers), status, field)
    created = await tocsin.create_integration(TARGET)
    where = f"{BASE}/{created['id']}"
    assert_error(await tocsin.api.patch(where, content=body, headers=headers), status, field)


async def test_create_requires_name_and_url(tocsin: Running) -> None:
    assert_error(await tocsin.api.post(BASE, json={"url": TARGET}), 422, "name")
    assert_error(await tocsin.api.post(BASE, json={"name": "siem"}), 422, "url")


async def test_oversized_ca_certificate_is_refused(tocsin: Running, ca_pem: str) -> None:
    """A bundle of valid certificates over 64 KiB is refused for its size, not its content."""
    bundle = ca_pem * (64 * 1024 // len(ca_pem) + 1)
    assert len(bundle) > 64 * 1024
    response = await tocsin.api.post(BASE, json=valid(ca_certificate=bundle))
    assert_error(response, 422, "ca_certificate")


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"name": "n" * 128}, id="name-128-chars"),
        pytest.param({"url": "https://127.0.0.1/" + "a" * 2030}, id="url-2048-chars"),
        pytest.param({"headers": {"X-Big": "a" * 16000}}, id="headers-under-16k"),
        pytest.param({"request_timeout": 1, "connection_timeout": 300}, id="timeouts-at-bounds"),
        pytest.param({"request_timeout": 2.5}, id="timeout-fraction"),
        pytest.param({"events": []}, id="no-events"),
        pytest.param({"method": "PUT"}, id="method-put"),
        pytest.param({"headers": {"Content-Type": "text/plain", "X-Token": "a b"}}, id="headers"),
        pytest.param({"format": "ndjson"}, id="ndjson"),
        pytest.param({"url": "https://127.0.0.1:8443/hook?token=abc#frag"}, id="url-query"),
    ],
)
async def test_values_at_the_limits_are_accepted(tocsin: Running, fields: dict[str, Any]) -> None:
    response = await tocsin.api.post(BASE, json=valid(**fields))
    assert response.status_code == 201, response.text
    shown = response.json()
    for key, value in fields.items():
        assert shown[key] == value


async def test_ca_certificate_is_accepted_and_shown(tocsin: Running, ca_pem: str) -> None:
    created = await tocsin.create_integration(TARGET, ca_certificate=ca_pem)
    assert created["ca_certificate"] == ca_pem


async def test_plain_http_is_accepted_where_the_deployment_allows_it(
    start_tocsin: StartTocsin,
) -> None:
    tocsin = await start_tocsin(allow_http=True)
    created = await tocsin.create_integration("http://127.0.0.1:8080/hook")
    assert created["url"] == "http://127.0.0.1:8080/hook"
    assert_error(await tocsin.api.post(BASE, json=valid(url="ftp://127.0.0.1/")), 422, "url")


# --------------------------------------------------------------------------- refused targets

REFUSED_TARGETS = [
    pytest.param("https://127.0.0.1/hook", id="loopback"),
    pytest.param("https://127.1.2.3:8443/hook", id="loopback-other"),
    pytest.param("https://169.254.169.254/latest/meta-data/", id="cloud-metadata"),
    pytest.param("https://[::1]/hook", id="ipv6-loopback"),
    pytest.param("https://[::ffff:127.0.0.1]/hook", id="ipv4-mapped-loopback"),
    pytest.param("https://[fe80::1]/hook", id="ipv6-link-local"),
    pytest.param("https://10.0.0.1/hook", id="private-10"),
    pytest.param("https://192.168.1.1/hook", id="private-192"),
    pytest.param("https://172.16.0.1/hook", id="private-172"),
    pytest.param("https://100.64.0.1/hook", id="cgnat"),
    pytest.param("https://0.0.0.0/hook", id="unspecified"),
    pytest.param("https://localhost/hook", id="name-resolving-to-loopback"),
    pytest.param("https://LOCALHOST/hook", id="name-upper-case"),
    pytest.param(
        "https://\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54/", id="name-fullwidth"
    ),
    pytest.param("https://[::ffff:7f00:1]/hook", id="ipv4-mapped-hex"),
    pytest.param("https://[fd00::1]/hook", id="ipv6-unique-local"),
    pytest.param("https://[64:ff9b:1::a9fe:a9fe]/latest/", id="nat64-local-use-metadata"),
    pytest.param("https://[::ffff:0:127.0.0.1]/hook", id="ipv4-translated-loopback"),
]


@pytest.mark.parametrize("url", REFUSED_TARGETS)
async def test_internal_targets_are_refused(start_tocsin: StartTocsin, url: str) -> None:
    tocsin = await start_tocsin(allowed_networks=())
    error = assert_error(await tocsin.api.post(BASE, json=valid(url=url)), 422, "url")
    assert error["code"] == "target_refused"
    assert "TOCSIN_ALLOWED_NETWORKS" in error["message"]
    response = await tocsin.api.post(f"{BASE}/test", json=valid(url=url))
    assert_error(response, 422, "url", "target_refused")
    assert (await tocsin.api.get(BASE)).json() == []


async def test_changing_an_integration_to_an_internal_target_is_refused(
    start_tocsin: StartTocsin,
) -> None:
    tocsin = await start_tocsin(allowed_networks=(ipaddress.ip_network("127.0.0.2/32"),))
    created = await tocsin.create_integration("https://127.0.0.2/hook")
    where = f"{BASE}/{created['id']}"
    metadata = "https://169.254.169.254/latest/meta-data/"
    assert_error(
        await tocsin.api.put(where, json=valid(url=metadata)), 422, "url", "target_refused"
    )
    for refused in ("https://[::1]/hook", "https://127.0.0.1/hook", "https://localhost/hook"):
        response = await tocsin.api.patch(where, json={"url": refused})
        assert_error(response, 422, "url", "target_refused")
    assert (await tocsin.api.get(where)).json()["url"] == "https://127.0.0.2/hook"


async def test_refused_test_target_is_never_contacted(
    start_tocsin: StartTocsin, receiver: Receiver, ca_pem: str
) -> None:
    tocsin = await start_tocsin(allowed_networks=())
    response = await tocsin.api.post(
        f"{BASE}/test", json=valid(url=receiver.url, ca_certificate=ca_pem)
    )
    assert_error(response, 422, "url", "target_refused")
    assert receiver.count == 0


# --------------------------------------------------------------------------- round trips


async def test_create_with_defaults_and_read_back(tocsin: Running) -> None:
    response = await tocsin.api.post(BASE, json={"name": "siem", "url": TARGET})
    assert response.status_code == 201, response.text
    created = response.json()
    assert set(created) == SHOWN_FIELDS
    assert {key: created[key] for key in DEFAULTS} == DEFAULTS
    assert created["name"] == "siem"
    assert created["url"] == TARGET
    assert created["type"] == "webhook"
    assert created["status"] == "active"
    assert created["last_error"] is None
    assert created["signing_secret"].startswith("whsec_")
    assert isinstance(created["id"], int)
    assert (await tocsin.api.get(f"{BASE}/{created['id']}")).json() == created
    assert (await tocsin.api.get(BASE)).json() == [created]


def full_settings(ca_pem: str) -> dict[str, Any]:
    return {
        "name": "Splunk HEC",
        "url": "https://127.0.0.1:8088/services/collector/raw?channel=1",
        "method": "PUT",
        "headers": {"Authorization": "Splunk abc", "X-Env": "prod"},
        "ca_certificate": ca_pem,
        "verify_tls": False,
        "request_timeout": 5,
        "connection_timeout": 3.5,
        "format": "ndjson",
        "events": ["hit", "vuln", "system", "scope"],
        "vuln_risk_levels": ["high"],
        "enabled": False,
    }


async def test_create_with_every_setting_and_read_back(tocsin: Running, ca_pem: str) -> None:
    settings = full_settings(ca_pem)
    response = await tocsin.api.post(BASE, json=settings)
    assert response.status_code == 201, response.text
    created = response.json()
    assert {key: created[key] for key in SPEC_FIELDS} == settings
    assert created["status"] == "disabled"
    read = (await tocsin.api.get(f"{BASE}/{created['id']}")).json()
    assert read == created


async def test_name_is_trimmed_and_duplicate_events_collapse(tocsin: Running) -> None:
    created = await tocsin.create_integration(
        TARGET, name="  siem  ", events=["hit", "hit", "vuln"], vuln_risk_levels=["low", "low"]
    )
    assert created["name"] == "siem"
    assert created["events"] == ["hit", "vuln"]
    assert created["vuln_risk_levels"] == ["low"]


async def test_list_shows_every_integration_in_creation_order(tocsin: Running) -> None:
    first = await tocsin.create_integration(TARGET, name="one")
    second = await tocsin.create_integration(TARGET, name="two")
    listed = (await tocsin.api.get(BASE)).json()
    assert [item["id"] for item in listed] == [first["id"], second["id"]]
    assert [item["name"] for item in listed] == ["one", "two"]


async def test_put_replaces_every_setting(tocsin: Running, ca_pem: str) -> None:
    created = (await tocsin.api.post(BASE, json=full_settings(ca_pem))).json()
    where = f"{BASE}/{created['id']}"
    response = await tocsin.api.put(where, json={"name": "renamed", "url": TARGET})
    assert response.status_code == 200, response.text
    replaced = response.json()
    # Whatever the PUT leaves out goes back to its default.
    assert {key: replaced[key] for key in DEFAULTS} == DEFAULTS
    assert replaced["name"] == "renamed"
    assert replaced["id"] == created["id"]
    assert replaced["signing_secret"] == created["signing_secret"]
    assert replaced["status"] == "active"
    assert (await tocsin.api.get(where)).json() == replaced


async def test_patch_changes_only_what_it_names(tocsin: Running, ca_pem: str) -> None:
    settings = full_settings(ca_pem) | {"enabled": True}
    created = (await tocsin.api.post(BASE, json=settings)).json()
    where = f"{BASE}/{created['id']}"
    response = await tocsin.api.patch(where, json={"request_timeout": 60, "headers": {}})
    assert response.status_code == 200, response.text
    patched = response.json()
    assert {key: patched[key] for key in SPEC_FIELDS} == settings | {
        "request_timeout": 60,
        "headers": {},
    }
    # status and last_error move with deliveries: the integration is told of its own change
    # (it subscribes to system events) and its port is closed, so compare the settings.
    stored = (await tocsin.api.get(where)).json()
    moving = {"status", "last_error"}
    assert {k: v for k, v in stored.items() if k not in moving} == {
        k: v for k, v in patched.items() if k not in moving
    }
    cleared = (await tocsin.api.patch(where, json={"ca_certificate": None})).json()
    assert cleared["ca_certificate"] is None
    assert cleared["method"] == "PUT"


async def test_empty_patch_changes_nothing(tocsin: Running) -> None:
    created = await tocsin.create_integration(TARGET)
    response = await tocsin.api.patch(f"{BASE}/{created['id']}", json={})
    assert response.status_code == 200, response.text
    after = response.json()
    assert {key: after[key] for key in SPEC_FIELDS} == {key: created[key] for key in SPEC_FIELDS}


async def test_disable_and_enable(tocsin: Running) -> None:
    created = await tocsin.create_integration(TARGET)
    where = f"{BASE}/{created['id']}"
    disabled = (await tocsin.api.post(f"{where}/disable")).json()
    assert disabled["enabled"] is False
    assert disabled["status"] == "disabled"
    assert disabled["status_reason"] == "disabled by Administrator <admin@localhost>"
    assert (await tocsin.api.get(where)).json()["status"] == "disabled"
    # Disabling keeps the settings.
    assert {key: disabled[key] for key in SPEC_FIELDS - {"enabled"}} == {
        key: created[key] for key in SPEC_FIELDS - {"enabled"}
    }
    again = await tocsin.api.post(f"{where}/disable")
    assert again.status_code == 200
    assert again.json()["status"] == "disabled"
    enabled = (await tocsin.api.post(f"{where}/enable")).json()
    assert enabled["enabled"] is True
    assert enabled["status"] == "active"
    assert enabled["status_reason"] is None
    assert (await tocsin.api.get(where)).json() == enabled


async def test_patch_enabled_switches_the_integration(tocsin: Running) -> None:
    created = await tocsin.create_integration(TARGET)
    where = f"{BASE}/{created['id']}"
    assert (await tocsin.api.patch(where, json={"enabled": False})).json()["status"] == "disabled"
    assert (await tocsin.api.patch(where, json={"enabled": True})).json()["status"] == "active"


async def test_delete(tocsin: Running) -> None:
    kept = await tocsin.create_integration(TARGET, name="kept")
    gone = await tocsin.create_integration(TARGET, name="gone")
    where = f"{BASE}/{gone['id']}"
    response = await tocsin.api.delete(where)
    assert response.status_code == 204
    assert response.content == b""
    assert_error(await tocsin.api.get(where), 404, None, "not_found")
    assert_error(await tocsin.api.delete(where), 404, None, "not_found")
    assert_error(await tocsin.api.post(f"{where}/enable"), 404, None, "not_found")
    assert (await tocsin.api.get(BASE)).json() == [kept]


UNKNOWN_ID_CALLS = [
    pytest.param("GET", "/integrations/{id}", None, id="read"),
    pytest.param("PUT", "/integrations/{id}", {"name": "x", "url": TARGET}, id="put"),
    pytest.param("PATCH", "/integrations/{id}", {"name": "x"}, id="patch"),
    pytest.param("DELETE", "/integrations/{id}", None, id="delete"),
    pytest.param("POST", "/integrations/{id}/enable", None, id="enable"),
    pytest.param("POST", "/integrations/{id}/disable", None, id="disable"),
    pytest.param("POST", "/integrations/{id}/test", None, id="test"),
    pytest.param("GET", "/integrations/{id}/deliveries", None, id="deliveries"),
    pytest.param("GET", "/deliveries/{id}", None, id="delivery"),
    pytest.param("POST", "/deliveries/{id}/resend", None, id="resend"),
]


@pytest.mark.parametrize(("method", "path", "body"), UNKNOWN_ID_CALLS)
@pytest.mark.parametrize("unknown", [999, 0, -1, 2**63, -(2**64), 10**30, "abc", "1.5"])
async def test_unknown_ids_are_not_found(
    tocsin: Running, method: str, path: str, body: dict[str, Any] | None, unknown: object
) -> None:
    await tocsin.create_integration(TARGET)
    url = "/api/v1" + path.format(id=unknown)
    response = await tocsin.api.request(method, url, json=body)
    assert_error(response, 404, None, "not_found")


# --------------------------------------------------------------------------- authentication

AUTH_CALLS = [
    pytest.param("GET", "/integrations", None, id="list"),
    pytest.param("POST", "/integrations", {"name": "x", "url": TARGET}, id="create"),
    pytest.param("GET", "/integrations/1", None, id="read"),
    pytest.param("PATCH", "/integrations/1", {"enabled": False}, id="patch"),
    pytest.param("DELETE", "/integrations/1", None, id="delete"),
    pytest.param("POST", "/integrations/1/disable", None, id="disable"),
    pytest.param("POST", "/integrations/test", {"name": "x", "url": TARGET}, id="test"),
    pytest.param("POST", "/hits", [], id="hits"),
    pytest.param("POST", "/vulnerabilities", [], id="vulnerabilities"),
    pytest.param("GET", "/deliveries/1", None, id="delivery"),
]


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param(None, id="missing"),
        pytest.param("Bearer tcs_wrong_token", id="wrong-token"),
        pytest.param("Bearer ", id="empty-token"),
        pytest.param("Basic YWRtaW46YWRtaW4=", id="basic-scheme"),
        pytest.param("tcs_test_admin_token", id="no-scheme"),
    ],
)
@pytest.mark.parametrize(("method", "path", "body"), AUTH_CALLS)
async def test_calls_without_a_valid_token_are_unauthorized(
    tocsin: Running, method: str, path: str, body: Any, authorization: str | None
) -> None:
    created = await tocsin.create_integration(TARGET)
    headers = {} if authorization is None else {"Authorization": authorization}
    transport = httpx.ASGITransport(app=create_app(tocsin.runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://tocsin.test") as anon:
        response = await anon.request(method, "/api/v1" + path, json=body, headers=headers)
    assert_error(response, 401, None, "unauthorized")
    # Nothing changed behind the refusal.
    assert (await tocsin.api.get(BASE)).json() == [created]


# --------------------------------------------------------------------------- test integration


def closed_port() -> int:
    """A loopback port nobody listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def assert_result_shape(result: dict[str, Any]) -> None:
    assert set(result) == {"ok", "status_code", "error", "response_body", "duration_ms"}
    assert isinstance(result["duration_ms"], int | float)
    assert result["duration_ms"] >= 0


async def test_unsaved_test_succeeds_with_the_receivers_ca(
    tocsin: Running, receiver: Receiver, ca_pem: str
) -> None:
    response = await tocsin.api.post(
        f"{BASE}/test", json=valid(url=receiver.url, ca_certificate=ca_pem)
    )
    assert response.status_code == 200, response.text
    result = response.json()
    assert_result_shape(result)
    assert result["ok"] is True
    assert result["status_code"] == 200
    assert result["error"] is None
    assert result["response_body"] == "ok"
    assert receiver.count == 1
    assert receiver.requests[0].method == "POST"
    # Testing does not save anything.
    assert (await tocsin.api.get(BASE)).json() == []


async def test_test_message_is_the_spec_message(
    start_tocsin: StartTocsin, receiver: Receiver, ca_pem: str
) -> None:
    golden = vector("test_message.json")
    settings = golden["settings"]
    tocsin = await start_tocsin(
        client_name=settings["client_name"],
        cloud=settings["cloud"],
        console_url=settings["console_url"],
        partner_name=settings["partner_name"],
        summary_prefix=settings["summary_prefix"],
    )
    response = await tocsin.api.post(
        f"{BASE}/test", json=valid(url=receiver.url, ca_certificate=ca_pem)
    )
    assert response.json()["ok"] is True
    request = receiver.requests[0]
    assert request.headers["Content-Type"] == "application/json"
    assert orjson.loads(request.body) == [golden["expected"]]


async def test_test_message_names_the_deployment(
    tocsin: Running, receiver: Receiver, ca_pem: str
) -> None:
    """Under the fixture's settings (cloud EU, console my.wallarm.com), the same message."""
    expected = vector("test_message.json")["expected"]
    text = orjson.dumps(expected).decode()
    text = text.replace("https://us1.my.wallarm.com", "https://my.wallarm.com")
    text = text.replace("(US)", "(EU)").replace("Cloud: US", "Cloud: EU")
    text = text.replace('"cloud":"US"', '"cloud":"EU"')
    await tocsin.api.post(f"{BASE}/test", json=valid(url=receiver.url, ca_certificate=ca_pem))
    assert orjson.loads(receiver.requests[0].body) == [orjson.loads(text)]


async def test_test_without_the_ca_reports_certificate_verification(
    tocsin: Running, receiver: Receiver
) -> None:
    response = await tocsin.api.post(f"{BASE}/test", json=valid(url=receiver.url))
    assert response.status_code == 200, response.text
    result = response.json()
    assert_result_shape(result)
    assert result["ok"] is False
    assert result["status_code"] is None
    assert result["response_body"] is None
    # In words: verification failed, why, and what to set.
    assert "verification failed" in result["error"]
    assert "unable to get local issuer certificate" in result["error"]
    assert "ca_certificate" in result["error"]
    assert receiver.count == 0


async def test_test_with_verification_off_succeeds(tocsin: Running, receiver: Receiver) -> None:
    response = await tocsin.api.post(f"{BASE}/test", json=valid(url=receiver.url, verify_tls=False))
    result = response.json()
    assert result["ok"] is True
    assert result["status_code"] == 200
    assert receiver.count == 1


async def test_test_reports_connection_refused(tocsin: Running) -> None:
    url = f"https://127.0.0.1:{closed_port()}/hook"
    response = await tocsin.api.post(f"{BASE}/test", json=valid(url=url))
    assert response.status_code == 200, response.text
    result = response.json()
    assert_result_shape(result)
    assert result["ok"] is False
    assert result["status_code"] is None
    assert "connection refused" in result["error"].lower()


async def test_test_reports_a_non_2xx_answer(
    tocsin: Running, make_receiver: MakeReceiver, ca_pem: str
) -> None:
    def unavailable(_: int, __: Received) -> Reply:
        return Reply(status=503, body=b"maintenance until 14:00")

    receiver = make_receiver(unavailable)
    response = await tocsin.api.post(
        f"{BASE}/test", json=valid(url=receiver.url, ca_certificate=ca_pem)
    )
    result = response.json()
    assert_result_shape(result)
    assert result["ok"] is False
    assert result["status_code"] == 503
    assert result["response_body"] == "maintenance until 14:00"
    assert "503" in result["error"]
    # Sent once, no retries.
    assert receiver.count == 1


async def test_saved_test_uses_the_saved_settings(
    tocsin: Running, receiver: Receiver, ca_pem: str
) -> None:
    created = await tocsin.create_integration(
        receiver.url,
        ca_certificate=ca_pem,
        method="PUT",
        headers={"Authorization": "Bearer receiver-secret"},
        format="ndjson",
    )
    response = await tocsin.api.post(f"{BASE}/{created['id']}/test")
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["ok"] is True
    assert result["status_code"] == 200
    assert receiver.count == 1
    request = receiver.requests[0]
    assert request.method == "PUT"
    assert request.headers["Authorization"] == "Bearer receiver-secret"
    # The test message is always a JSON array, whatever the integration's format.
    assert request.headers["Content-Type"] == "application/json"
    body = orjson.loads(request.body)
    assert isinstance(body, list)
    assert len(body) == 1
    assert body[0]["summary"] == "[Test message] [Test partner(EU)] New vulnerability detected"


async def test_saved_test_of_a_disabled_integration_still_sends_once(
    tocsin: Running, receiver: Receiver, ca_pem: str
) -> None:
    created = await tocsin.create_integration(receiver.url, ca_certificate=ca_pem, enabled=False)
    result = (await tocsin.api.post(f"{BASE}/{created['id']}/test")).json()
    assert result["ok"] is True
    assert receiver.count == 1


async def test_unsaved_test_refuses_bad_input(tocsin: Running) -> None:
    response = await tocsin.api.post(f"{BASE}/test", json=valid(headers={"Host": "x"}))
    assert_error(response, 422, "headers")
    response = await tocsin.api.post(f"{BASE}/test", json=valid(request_timeout=0))
    assert_error(response, 422, "request_timeout")
