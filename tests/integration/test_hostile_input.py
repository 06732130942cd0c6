"""Hostile input at the API and on ingestion: always a 4xx naming the field, or data kept intact.

Builds on the tables of test_api_integrations.py and test_api_ingest.py with what they
leave out: nesting past the parsers' limits, bodies over the limit with and without a
Content-Length, header injection through every write path, text that is not Unicode
or is Unicode meant to mislead, numbers out of range, duplicate keys and bodies not
declared as JSON. Decisions where SPEC is silent are in the test names and docstrings.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from starlette.types import Message

from tests.conftest import ADMIN_TOKEN, Running, StartTocsin, hit
from tocsin.api import create_app
from tocsin.formats import MAX_HIT_DEPTH
from tocsin.receiver import Receiver

BASE = "/api/v1/integrations"
TARGET = "https://127.0.0.1:8443/hook"  # never connected to: saving does not send
JSON_HEADERS = {"Content-Type": "application/json"}

# The API calls that take an integration's settings: each validates them the same way.
SETTINGS_CALLS = ["create", "put", "patch", "test"]


def assert_error(response: httpx.Response, status: int, field: str | None, code: str) -> str:
    """The one error shape of the API; returns the message."""
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"], body
    error = body["error"]
    assert set(error) == {"code", "message", "field"}, error
    assert error["code"] == code, error
    assert error["field"] == field, error
    assert isinstance(error["message"], str)
    assert error["message"]
    message: str = error["message"]
    return message


def valid(**fields: Any) -> dict[str, Any]:
    return {"name": "siem", "url": TARGET} | fields


async def call(
    tocsin: Running,
    method: str,
    path: str,
    content: bytes | AsyncIterator[bytes],
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """One request that must be answered, and soon: a hang fails the test."""
    async with asyncio.timeout(20):
        return await tocsin.api.request(
            method, path, content=content, headers=JSON_HEADERS if headers is None else headers
        )


async def settings_call(
    tocsin: Running, kind: str, fields: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[httpx.Response, str | None]:
    """Send settings through one of SETTINGS_CALLS: the answer, and the integration changed.

    `fields` go into a valid integration (create, put, test) or alone (patch); put and
    patch change an integration created for the purpose, create and test none.
    """
    where = None
    if kind in ("put", "patch"):
        where = f"{BASE}/{(await tocsin.create_integration(TARGET))['id']}"
    content = orjson.dumps(fields if kind == "patch" else valid(**fields))
    method, path = {
        "create": ("POST", BASE),
        "put": ("PUT", where),
        "patch": ("PATCH", where),
        "test": ("POST", f"{BASE}/test"),
    }[kind]
    assert path is not None
    return await call(tocsin, method, path, content, headers), where


async def assert_nothing_saved(tocsin: Running, kind: str, where: str | None) -> None:
    """A refused call left the integrations as they were."""
    listed = (await tocsin.api.get(BASE)).json()
    if where is None:
        assert listed == []
        return
    (only,) = listed
    assert only["name"] == "receiver"
    assert only["headers"] == {}, kind


def nested(depth: int, leaf: Any = "leaf") -> Any:
    """`leaf` inside `depth` arrays and objects, alternating."""
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


def deep_text(depth: int) -> bytes:
    """JSON text nesting `depth` arrays, built as text: past what a parser may build."""
    return b"[" * depth + b"]" * depth


def notifications(receiver: Receiver) -> list[dict[str, Any]]:
    """Every notification the receiver got, from JSON array and NDJSON bodies alike."""
    found: list[dict[str, Any]] = []
    for request in list(receiver.requests):
        if request.headers["Content-Type"] == "application/x-ndjson":
            found.extend(orjson.loads(line) for line in request.body.split(b"\n") if line)
        else:
            found.extend(orjson.loads(request.body))
    return found


def delivered_hits(receiver: Receiver) -> dict[str, dict[str, Any]]:
    """The hits delivered so far, by path."""
    return {
        item["details"]["hit"]["path"]: item["details"]["hit"] for item in notifications(receiver)
    }


async def deliver(
    tocsin: Running, receiver: Receiver, ca_pem: str, hits: list[dict[str, Any]], **fields: Any
) -> bytes:
    """Report `hits` to an integration for `receiver`; the raw bodies it got, joined."""
    await tocsin.create_integration(receiver.url, ca_certificate=ca_pem, events=["hit"], **fields)
    await tocsin.report_hits(hits)
    paths = {found["path"] for found in hits}
    assert await receiver.until(lambda r: paths <= set(delivered_hits(r)))
    return b"".join(request.body for request in receiver.requests)


# --------------------------------------------------------------------------- nesting

DEEP = 10_000
DEEP_BODIES = [
    pytest.param("POST", "/api/v1/hits", deep_text(DEEP), id="hits-arrays"),
    pytest.param("POST", "/api/v1/hits", b'{"a":' * DEEP + b"1" + b"}" * DEEP, id="hits-objects"),
    pytest.param(
        "POST",
        "/api/v1/hits",
        b'[{"type":"sqli","deep":' + deep_text(DEEP) + b"}]",
        id="hits-in-a-field",
    ),
    pytest.param("POST", "/api/v1/vulnerabilities", deep_text(DEEP), id="vulns-arrays"),
    pytest.param(
        "POST",
        "/api/v1/vulnerabilities",
        b'{"title":' + deep_text(DEEP) + b"}",
        id="vulns-in-a-field",
    ),
    pytest.param("POST", BASE, deep_text(DEEP), id="create-arrays"),
    pytest.param("POST", BASE, b'{"a":' * DEEP + b"1" + b"}" * DEEP, id="create-objects"),
    pytest.param(
        "POST",
        BASE,
        b'{"name":"n","url":"' + TARGET.encode() + b'","headers":' + deep_text(DEEP) + b"}",
        id="create-in-a-field",
    ),
    pytest.param("POST", f"{BASE}/test", deep_text(DEEP), id="test-arrays"),
    pytest.param("PUT", f"{BASE}/1", deep_text(DEEP), id="put-arrays"),
    pytest.param("PATCH", f"{BASE}/1", b'{"name":' + deep_text(DEEP) + b"}", id="patch-in-a-field"),
]


@pytest.mark.parametrize(("method", "path", "content"), DEEP_BODIES)
async def test_nesting_past_the_parser_limit_is_400_naming_body(
    tocsin: Running, method: str, path: str, content: bytes
) -> None:
    """10,000 levels: orjson stops at 1024 and says so; never a 500, a hang or a crash."""
    await tocsin.create_integration(TARGET)
    message = assert_error(await call(tocsin, method, path, content), 400, "body", "bad_json")
    assert "depth" in message
    assert len((await tocsin.api.get(BASE)).json()) == 1


def deep_json(depth: int) -> bytes:
    """A JSON value nesting `depth` arrays around a string, as text (orjson encodes 254)."""
    return b"[" * depth + b'"leaf"' + b"]" * depth


def with_raw(document: dict[str, Any], key: str, raw: bytes) -> bytes:
    """`document` as JSON text with `key` added, its value given as JSON text."""
    member = b'"' + key.encode() + b'":' + raw
    if not document:
        return b"{" + member + b"}"
    return orjson.dumps(document)[:-1] + b"," + member + b"}"


# Deep enough to pass the parser (1024 levels) but not the checks after it.
PARSEABLE = 1000
DEEP_FIELDS = [
    pytest.param(
        "POST", BASE, with_raw(valid(), "headers", deep_json(PARSEABLE)), "headers", id="headers"
    ),
    pytest.param(
        "POST", BASE, with_raw(valid(), "colour", deep_json(PARSEABLE)), "colour", id="unknown"
    ),
    pytest.param(
        "POST", BASE, with_raw({"url": TARGET}, "name", deep_json(PARSEABLE)), "name", id="name"
    ),
    pytest.param(
        "POST", BASE, with_raw(valid(), "events", deep_json(PARSEABLE)), "events", id="events"
    ),
    pytest.param(
        "PATCH", f"{BASE}/1", with_raw({}, "events", deep_json(PARSEABLE)), "events", id="patch"
    ),
    pytest.param(
        "PUT", f"{BASE}/1", with_raw(valid(), "method", deep_json(PARSEABLE)), "method", id="put"
    ),
    pytest.param(
        "POST",
        "/api/v1/vulnerabilities",
        with_raw({"id": 1}, "title", deep_json(PARSEABLE)),
        "title",
        id="vuln-title",
    ),
]


@pytest.mark.parametrize(("method", "path", "content", "field"), DEEP_FIELDS)
async def test_parseable_nesting_in_a_typed_field_is_422_naming_it(
    tocsin: Running, method: str, path: str, content: bytes, field: str
) -> None:
    await tocsin.create_integration(TARGET)
    assert_error(await call(tocsin, method, path, content), 422, field, "invalid")


@pytest.mark.parametrize(
    "depth",
    [
        pytest.param(MAX_HIT_DEPTH, id="one-level-over"),
        pytest.param(300, id="past-the-encoder"),  # a 500 before: orjson encodes 254 levels
        pytest.param(PARSEABLE, id="just-under-the-parser"),
    ],
)
async def test_a_hit_nesting_past_the_limit_is_refused_naming_the_field(
    tocsin: Running, depth: int
) -> None:
    """A hit has at most MAX_HIT_DEPTH levels (the hit object is the first).

    Delivered, it sits 3 levels down (array, notification, details): the limit keeps a
    body within what receivers' parsers take (Ruby's JSON: 100 levels, serde_json: 128),
    so one hostile hit cannot make every batch it travels in fail.
    """
    content = b'[{"type":"sqli"},{"type":"xss","deep":' + deep_json(depth) + b"}]"
    message = assert_error(
        await call(tocsin, "POST", "/api/v1/hits", content), 422, "[1].deep", "invalid"
    )
    assert str(MAX_HIT_DEPTH) in message


async def test_a_hit_nesting_to_the_limit_is_delivered_intact(
    tocsin: Running, receiver: Receiver, ca_pem: str
) -> None:
    deepest = nested(MAX_HIT_DEPTH - 1)  # inside the hit object: MAX_HIT_DEPTH levels
    shallow = {"headers": {"User-Agent": ["curl/8"]}, "matrix": [[1, 2], [3, [4, {}]]]}
    hits = [hit(path="/deepest", deep=deepest), hit(path="/shallow", **shallow)]
    await deliver(tocsin, receiver, ca_pem, hits)
    delivered = delivered_hits(receiver)
    assert delivered["/deepest"]["deep"] == deepest
    assert delivered["/shallow"]["headers"] == shallow["headers"]
    assert delivered["/shallow"]["matrix"] == shallow["matrix"]


# --------------------------------------------------------------------------- body size

LIMIT = 2048
OVER = b"[" + b" " * LIMIT + b"]"  # valid JSON, two bytes over the limit


async def chunked(total: int, sent: list[int]) -> AsyncIterator[bytes]:
    """`total` bytes of JSON whitespace in 256-byte chunks, no Content-Length; counts them."""
    yield b"["
    for _ in range(total // 256):
        sent.append(256)
        yield b" " * 256
    yield b"]"


SIZE_CALLS = [
    pytest.param("POST", "/api/v1/hits", id="hits"),
    pytest.param("POST", "/api/v1/vulnerabilities", id="vulns"),
    pytest.param("POST", BASE, id="create"),
    pytest.param("POST", f"{BASE}/test", id="test"),
    pytest.param("PUT", f"{BASE}/1", id="put"),
    pytest.param("PATCH", f"{BASE}/1", id="patch"),
]


@pytest.mark.parametrize(("method", "path"), SIZE_CALLS)
async def test_a_body_over_the_limit_is_413_naming_body_with_content_length(
    start_tocsin: StartTocsin, method: str, path: str
) -> None:
    tocsin = await start_tocsin(max_body_bytes=LIMIT)
    created = await tocsin.create_integration(TARGET)
    response = await call(tocsin, method, path, OVER)
    assert response.request.headers["Content-Length"] == str(len(OVER))
    assert_error(response, 413, "body", "too_large")
    assert (await tocsin.api.get(BASE)).json() == [created]


@pytest.mark.parametrize(("method", "path"), SIZE_CALLS)
async def test_a_chunked_body_over_the_limit_is_413_and_not_read_to_the_end(
    start_tocsin: StartTocsin, method: str, path: str
) -> None:
    tocsin = await start_tocsin(max_body_bytes=LIMIT)
    created = await tocsin.create_integration(TARGET)
    sent: list[int] = []
    total = 100 * LIMIT
    response = await call(tocsin, method, path, chunked(total, sent))
    assert "Content-Length" not in response.request.headers
    assert response.request.headers["Transfer-Encoding"] == "chunked"
    assert_error(response, 413, "body", "too_large")
    # Reading stopped at the limit: a client cannot make tocsin buffer what it sends.
    assert sum(sent) <= LIMIT + 256
    assert (await tocsin.api.get(BASE)).json() == [created]


@pytest.mark.parametrize(
    ("method", "path", "document", "status"),
    [
        pytest.param("POST", "/api/v1/hits", b"[]", 202, id="hits"),
        pytest.param("POST", BASE, orjson.dumps(valid()), 201, id="create"),
        pytest.param("PATCH", f"{BASE}/1", b'{"name":"renamed"}', 200, id="patch"),
    ],
)
async def test_a_body_of_exactly_the_limit_is_accepted(
    start_tocsin: StartTocsin, method: str, path: str, document: bytes, status: int
) -> None:
    tocsin = await start_tocsin(max_body_bytes=LIMIT)
    await tocsin.create_integration(TARGET)
    exact = document + b" " * (LIMIT - len(document))
    response = await call(tocsin, method, path, exact)
    assert response.status_code == status, response.text
    assert_error(await call(tocsin, method, path, exact + b" "), 413, "body", "too_large")


async def test_a_large_hit_field_under_the_limit_is_delivered_whole(
    tocsin: Running, receiver: Receiver, ca_pem: str
) -> None:
    """No limit per hit field: the body limit bounds them, and what passes is kept whole."""
    payload = "' OR 1=1 -- " + "\U0001f600é\x00" * 100_000
    many_keys = {f"extra_{index}": index for index in range(2_000)}
    hits = [hit(path="/big", payloads=[payload]), hit(path="/wide", **many_keys)]
    await deliver(tocsin, receiver, ca_pem, hits)
    delivered = delivered_hits(receiver)
    assert delivered["/big"]["payloads"] == [payload]
    assert {key: delivered["/wide"][key] for key in many_keys} == many_keys


# --------------------------------------------------------------------------- header injection

# Decision (tighter than SPEC 3.4, which names CR, LF and NUL): a header value refuses
# every C0 control but tab, DEL, the C1 controls (NEL among them) and U+2028/U+2029,
# which str.splitlines and some HTTP stacks read as line ends. Tab, non-breaking space
# and other non-ASCII text pass and are sent as UTF-8.
BAD_VALUES = [
    pytest.param("a\rb", id="cr"),
    pytest.param("a\nb", id="lf"),
    pytest.param("a\x00b", id="nul"),
    pytest.param("token\r\nX-Injected: 1", id="crlf-second-header"),
    pytest.param("token\nX-Injected: 1", id="lf-second-header"),
    pytest.param("token\r\n\r\n{}", id="crlf-crlf-body"),
    pytest.param("token\r", id="trailing-cr"),
    pytest.param("a\x0bb", id="vertical-tab"),
    pytest.param("a\x0cb", id="form-feed"),
    pytest.param("a\x1b[31mred", id="escape"),
    pytest.param("a\x7fb", id="del"),
    pytest.param("a\x85X-Injected: 1", id="nel-u0085"),
    pytest.param("a\x9b31m", id="c1-csi"),
    pytest.param("a\u2028X-Injected: 1", id="line-separator-u2028"),
    pytest.param("a\u2029b", id="paragraph-separator-u2029"),
]


@pytest.mark.parametrize("kind", SETTINGS_CALLS)
@pytest.mark.parametrize("value", BAD_VALUES)
async def test_header_values_with_controls_or_line_breaks_are_refused(
    tocsin: Running, kind: str, value: str
) -> None:
    response, where = await settings_call(tocsin, kind, {"headers": {"X-Api-Key": value}})
    message = assert_error(response, 422, "headers", "invalid")
    assert "X-Api-Key" in message
    assert value not in message  # a header value may be a secret: never echoed
    await assert_nothing_saved(tocsin, kind, where)


BAD_NAMES = [
    pytest.param("X-Key\r\nX-Injected", id="crlf"),
    pytest.param("X-Key\x00", id="nul"),
    pytest.param("X-Key\u2028", id="line-separator"),
    pytest.param("X-Key\x85", id="nel"),
    pytest.param("X-Ke\u0443", id="cyrillic-lookalike"),
    pytest.param("X-Key ", id="trailing-space"),
    pytest.param("X-Key\t", id="tab"),
]


@pytest.mark.parametrize("kind", SETTINGS_CALLS)
@pytest.mark.parametrize("name", BAD_NAMES)
async def test_header_names_that_are_not_tokens_are_refused(
    tocsin: Running, kind: str, name: str
) -> None:
    response, where = await settings_call(tocsin, kind, {"headers": {name: "1"}})
    assert_error(response, 422, "headers", "invalid")
    await assert_nothing_saved(tocsin, kind, where)


async def test_header_values_with_tab_and_unicode_text_are_sent_as_given(
    tocsin: Running, receiver: Receiver, ca_pem: str
) -> None:
    headers = {
        "X-Tab": "a\tb",
        "X-Text": "naïve ☃ \U0001f600",
        "X-No-Break": "a\u00a0b",
        "X-Quotes": "\"';--",
    }
    created = await tocsin.create_integration(receiver.url, ca_certificate=ca_pem, headers=headers)
    assert created["headers"] == headers
    result = (await tocsin.api.post(f"{BASE}/{created['id']}/test")).json()
    assert result["ok"] is True, result
    (request,) = receiver.requests
    assert {name: request.headers[name] for name in headers} == headers
    assert "X-Injected" not in request.headers


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize("kind", ["create", "put", "patch"])
@pytest.mark.parametrize(
    "name",
    [
        pytest.param("invoice\u202efdp.exe", id="right-to-left-override"),
        pytest.param("siem\u202d", id="left-to-right-override"),
        pytest.param("\u202bsiem", id="right-to-left-embedding"),
        pytest.param("\u2067siem\u2069", id="right-to-left-isolate"),
        pytest.param("a\u2066b", id="left-to-right-isolate"),
    ],
)
async def test_names_with_bidirectional_overrides_are_refused(
    tocsin: Running, kind: str, name: str
) -> None:
    """Names are shown in the console and in system notifications; these reorder what follows.

    Decision (SPEC is silent): refuse embedding, override and isolate controls
    (U+202A-U+202E, U+2066-U+2069), the Trojan Source characters. Zero-width joiners
    and marks stay allowed: emoji sequences and scripts such as Persian need them.
    """
    response, where = await settings_call(tocsin, kind, {"name": name})
    assert_error(response, 422, "name", "invalid")
    await assert_nothing_saved(tocsin, kind, where)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("\U0001f468\u200d\U0001f469\u200d\U0001f467 family", id="zwj-emoji"),
        pytest.param("\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645", id="zwnj-persian"),
        pytest.param("\u05e9\u05dc\u05d5\u05dd siem", id="hebrew"),
        pytest.param("siem\u200e", id="left-to-right-mark"),
        pytest.param("\U0001d516\U0001d526\U0001d522\U0001d52a", id="non-bmp-letters"),
        pytest.param("e\u0301\u0301\u0301", id="combining-marks"),
        pytest.param("zero\u200bwidth", id="zero-width-space"),
    ],
)
async def test_names_in_any_script_are_kept_exactly(tocsin: Running, name: str) -> None:
    created = await tocsin.create_integration(TARGET, name=name)
    assert created["name"] == name
    assert (await tocsin.api.get(f"{BASE}/{created['id']}")).json()["name"] == name


# --------------------------------------------------------------------------- not Unicode

NOT_UNICODE = [
    pytest.param(b'"\\ud800"', id="lone-high-surrogate"),
    pytest.param(b'"\\udc00"', id="lone-low-surrogate"),
    pytest.param(b'"\\udc00\\ud800"', id="reversed-pair"),
    pytest.param(b'"\\ud800x"', id="high-then-letter"),
    pytest.param(b'"\xff"', id="byte-ff"),
    pytest.param(b'"\xc0\xaf"', id="overlong-slash"),
    pytest.param(b'"\xed\xa0\x80"', id="utf8-encoded-surrogate"),
    pytest.param(b'"\xe2\x82"', id="truncated-sequence"),
]


@pytest.mark.parametrize("text", NOT_UNICODE)
@pytest.mark.parametrize(
    ("method", "path", "template"),
    [
        pytest.param("POST", "/api/v1/hits", b'[{"type":%s}]', id="hit-value"),
        pytest.param("POST", "/api/v1/hits", b'[{%s:"x"}]', id="hit-key"),
        pytest.param("POST", "/api/v1/vulnerabilities", b'{"title":%s}', id="vuln-value"),
        pytest.param(
            "POST", BASE, b'{"name":%s,"url":"' + TARGET.encode() + b'"}', id="create-name"
        ),
        pytest.param("PATCH", f"{BASE}/1", b'{"headers":{"X-Key":%s}}', id="patch-header"),
    ],
)
async def test_text_that_is_not_unicode_is_400_naming_body(
    tocsin: Running, method: str, path: str, template: bytes, text: bytes
) -> None:
    """Lone surrogates and invalid UTF-8 cannot be stored or sent on: refused as bad JSON."""
    created = await tocsin.create_integration(TARGET)
    response = await call(tocsin, method, path, template % text)
    assert_error(response, 400, "body", "bad_json")
    assert (await tocsin.api.get(BASE)).json() == [created]


@pytest.mark.parametrize(
    ("path", "content"),
    [
        pytest.param("/api/v1/hits", b"\xef\xbb\xbf[]", id="hits"),
        pytest.param(BASE, b"\xef\xbb\xbf" + orjson.dumps(valid()), id="create"),
    ],
)
async def test_a_byte_order_mark_is_400_naming_body(
    tocsin: Running, path: str, content: bytes
) -> None:
    """RFC 8259 forbids sending one; refused the same way on every endpoint."""
    assert_error(await call(tocsin, "POST", path, content), 400, "body", "bad_json")


UNICODE_HITS: dict[str, dict[str, Any]] = {
    "/emoji": {"payloads": ["\U0001f600\U0001f4a3"], "remote_country": "\U0001f1f5\U0001f1f1"},
    "/non-bmp": {"parameter": "\U0001d516\U0001d526 \U00020000 \U0010fffd"},
    "/escaped-pair": {"type": "xss"},  # reported as \\ud83d\\ude00 in the JSON text
    "/nul": {"payloads": ["a\x00b", "\x00"], "note\x00key": "\x00value"},
    "/separators": {"payloads": ["line\u2028para\u2029nel\x85", "cr\rlf\ntab\t"]},
    "/bidi": {"parameter": "user\u202egnp.exe", "zero": "a\u200b\u200c\u200d\ufeffb"},
    "/combining": {"payloads": ["Z\u0351\u0360\u0353a\u0352\u035flgo"]},
    "/noncharacters": {"payloads": ["\ufffe\uffff\U0001fffe", "\ue000"]},
}


async def test_unicode_in_hits_is_delivered_byte_exact(
    tocsin: Running, receiver: Receiver, ca_pem: str
) -> None:
    """Hits are data: any Unicode is kept, NUL included, and sent as orjson writes it."""
    await tocsin.create_integration(receiver.url, ca_certificate=ca_pem, events=["hit"])
    hits = [hit(path=path, **fields) for path, fields in UNICODE_HITS.items()]
    reported = orjson.dumps(hits).replace(b'"type":"xss"', b'"type":"\\ud83d\\ude00"')
    response = await tocsin.api.post("/api/v1/hits", content=reported, headers=JSON_HEADERS)
    assert response.status_code == 202, response.text
    assert await receiver.until(lambda r: set(UNICODE_HITS) <= set(delivered_hits(r)))
    delivered = delivered_hits(receiver)
    raw = b"".join(request.body for request in receiver.requests)
    for path, fields in UNICODE_HITS.items():
        for key, reported_value in fields.items():
            # The escaped pair stands for one emoji, sent on as UTF-8.
            value = "\U0001f600" if path == "/escaped-pair" else reported_value
            assert delivered[path][key] == value, (path, key)
            assert orjson.dumps({key: value})[1:-1] in raw, (path, key)
    # NUL travels escaped, never as a raw byte; non-ASCII travels as UTF-8, unescaped.
    assert b"\x00" not in raw
    assert b"a\\u0000b" in raw
    assert "\U0001f600".encode() in raw


async def test_unicode_line_separators_do_not_break_ndjson_framing(
    tocsin: Running, receiver: Receiver, ca_pem: str
) -> None:
    """One notification per line: only LF ends a line, and JSON escapes every LF inside."""
    tricky = ["a\u2028b", "c\u2029d", "e\x85f", "g\rh", "i\nj", "k\r\nl"]
    hits = [hit(path=f"/line-{index}", payloads=[text]) for index, text in enumerate(tricky)]
    raw = await deliver(tocsin, receiver, ca_pem, hits, format="ndjson")
    lines = raw.split(b"\n")
    assert lines[-1] == b""
    parsed = [orjson.loads(line) for line in lines[:-1]]
    assert len(parsed) == len(tricky)
    assert sorted(item["details"]["hit"]["payloads"][0] for item in parsed) == sorted(tricky)


# --------------------------------------------------------------------------- content type


NOT_JSON = [
    pytest.param("text/plain", id="text-plain"),
    pytest.param("application/octet-stream", id="octet-stream"),
    pytest.param("application/x-www-form-urlencoded", id="form"),
    pytest.param("application/x-ndjson", id="ndjson"),
    pytest.param(None, id="none"),
]


@pytest.mark.parametrize("path", ["/api/v1/hits", "/api/v1/vulnerabilities"])
@pytest.mark.parametrize("content_type", NOT_JSON)
async def test_ingestion_not_declared_json_is_415_naming_content_type(
    tocsin: Running, path: str, content_type: str | None
) -> None:
    """Decision: one rule for every route taking JSON, ingestion included (issue 17): a
    body not declared as JSON is refused before it is read."""
    headers = {} if content_type is None else {"Content-Type": content_type}
    response = await call(tocsin, "POST", path, orjson.dumps([hit()]), headers)
    message = assert_error(response, 415, "Content-Type", "unsupported_media_type")
    assert "application/json" in message


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON"]
)
async def test_ingestion_declared_json_in_any_spelling_is_read(
    tocsin: Running, content_type: str
) -> None:
    headers = {"Content-Type": content_type}
    response = await call(tocsin, "POST", "/api/v1/hits", orjson.dumps([hit()]), headers)
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 1}


async def test_every_route_taking_json_refuses_a_body_not_declared_json(tocsin: Running) -> None:
    """Every operation of the OpenAPI document with a JSON request body, one rule."""
    document = (await tocsin.api.get("/api/v1/openapi.json")).json()
    operations = [
        (method.upper(), path.replace("{integration_id}", "1").replace("{", "").replace("}", ""))
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if "application/json" in operation.get("requestBody", {}).get("content", {})
    ]
    assert len(operations) >= 10
    refused = {}
    for method, path in operations:
        response = await call(tocsin, method, path, b"{}", {"Content-Type": "text/plain"})
        refused[method, path] = response.status_code
    assert set(refused.values()) == {415}, refused


@pytest.mark.parametrize("kind", SETTINGS_CALLS)
@pytest.mark.parametrize(
    "content_type",
    [
        pytest.param("text/plain", id="text-plain"),
        pytest.param("text/json", id="text-json"),
        pytest.param("application/x-www-form-urlencoded", id="form"),
        pytest.param("multipart/form-data; boundary=x", id="multipart"),
        pytest.param("application/jsonx", id="jsonx"),
        pytest.param(None, id="none"),
    ],
)
async def test_integration_settings_not_declared_json_are_415_naming_content_type(
    tocsin: Running, kind: str, content_type: str | None
) -> None:
    """Decision: the management API takes only a body declared as JSON, as FastAPI parses.

    Otherwise FastAPI validates the raw bytes ("Input should be a valid dictionary"),
    which misleads; a 415 says what to fix.
    """
    headers = {} if content_type is None else {"Content-Type": content_type}
    response, where = await settings_call(tocsin, kind, {"name": "changed"}, headers)
    message = assert_error(response, 415, "Content-Type", "unsupported_media_type")
    assert "application/json" in message
    await assert_nothing_saved(tocsin, kind, where)


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json; charset=utf-8",
        "APPLICATION/JSON",
        "application/merge-patch+json",
        "application/json;charset=UTF-8",
    ],
)
async def test_integration_settings_declared_json_in_any_spelling_are_read(
    tocsin: Running, content_type: str
) -> None:
    response, _ = await settings_call(
        tocsin, "patch", {"name": "changed"}, {"Content-Type": content_type}
    )
    assert response.status_code == 200, response.text
    assert response.json()["name"] == "changed"


# --------------------------------------------------------------------------- numbers and keys

NUMBERS = [
    # Past a double: orjson refuses the JSON text itself.
    pytest.param("/api/v1/hits", b'[{"request_time":1e400}]', 400, "body", id="hit-1e400"),
    pytest.param("/api/v1/hits", b'[{"anomaly":-1e400}]', 400, "body", id="hit-minus-1e400"),
    pytest.param("/api/v1/hits", b'[{"probability":NaN}]', 400, "body", id="hit-nan"),
    pytest.param("/api/v1/hits", b'[{"probability":Infinity}]', 400, "body", id="hit-inf"),
    # Past 64 bits an integer parses as a float: the wrong JSON type for an integer field.
    pytest.param(
        "/api/v1/hits",
        b'[{"request_time":18446744073709551616}]',
        422,
        "[0].request_time",
        id="hit-2-64",
    ),
    pytest.param(
        "/api/v1/hits",
        b'[{"remote_port":-9223372036854775809}]',
        422,
        "[0].remote_port",
        id="hit-below-int64",
    ),
    pytest.param("/api/v1/hits", b'[{"request_time":-0.0}]', 422, "[0].request_time", id="-0.0"),
    pytest.param("/api/v1/hits", b'[{"request_time":1E2}]', 422, "[0].request_time", id="1E2"),
    pytest.param(
        "/api/v1/vulnerabilities", b'{"id":18446744073709551616}', 422, "id", id="vuln-id-2-64"
    ),
    pytest.param("/api/v1/vulnerabilities", b'{"id":1e400}', 400, "body", id="vuln-id-1e400"),
    pytest.param(BASE, b'{"request_timeout":1e400}', 400, "body", id="timeout-1e400"),
    pytest.param(
        BASE, b'{"request_timeout":18446744073709551616}', 422, "request_timeout", id="timeout-2-64"
    ),
    pytest.param(BASE, b'{"request_timeout":-0}', 422, "request_timeout", id="timeout-minus-0"),
    pytest.param(BASE, b'{"request_timeout":1e-400}', 422, "request_timeout", id="timeout-tiny"),
    pytest.param(BASE, b'{"connection_timeout":NaN}', 400, "body", id="timeout-nan"),
]


@pytest.mark.parametrize(("path", "content", "status", "field"), NUMBERS)
async def test_numbers_out_of_range_are_refused_naming_the_field_or_the_body(
    tocsin: Running, path: str, content: bytes, status: int, field: str
) -> None:
    if path == BASE:
        settings = orjson.dumps(valid())[:-1] + b"," + content[1:]
        content = settings
    code = "bad_json" if status == 400 else "invalid"
    assert_error(await call(tocsin, "POST", path, content), status, field, code)


async def test_integers_at_the_edges_of_64_bits_are_delivered_exactly(
    tocsin: Running, receiver: Receiver, ca_pem: str
) -> None:
    """orjson reads integers up to 2**64 - 1 and down to -2**63; they travel unchanged."""
    edges = {
        "request_time": 2**64 - 1,
        "response_len": -(2**63),
        "stamps_hash": 2**63,
        "remote_port": 0,
    }
    await tocsin.create_integration(receiver.url, ca_certificate=ca_pem, events=["hit"])
    reported = orjson.dumps([hit(path="/edges", **edges)])
    reported = reported.replace(b'"remote_port":0', b'"remote_port":-0')
    response = await tocsin.api.post("/api/v1/hits", content=reported, headers=JSON_HEADERS)
    assert response.status_code == 202, response.text
    assert await receiver.until(lambda r: "/edges" in delivered_hits(r))
    delivered = delivered_hits(receiver)["/edges"]
    assert {key: delivered[key] for key in edges} == edges
    raw = b"".join(request.body for request in receiver.requests)
    assert b'"request_time":18446744073709551615' in raw
    assert b'"remote_port":0' in raw


@pytest.mark.parametrize("before", [2**63, 10**30])
async def test_a_page_cursor_past_64_bits_is_422_naming_it(tocsin: Running, before: int) -> None:
    """It went to the database as is: a 500 before."""
    created = await tocsin.create_integration(TARGET)
    response = await tocsin.api.get(f"{BASE}/{created['id']}/deliveries", params={"before": before})
    assert_error(response, 422, "before", "invalid")


async def test_duplicate_keys_take_the_last_value_everywhere(tocsin: Running) -> None:
    """Decision: as every mainstream parser does (RFC 8259 leaves it open), the last wins.

    Validation sees the value that is kept, so a duplicate cannot slip a bad value past
    the checks, nor a good one hide a bad one.
    """
    url = TARGET.encode()
    content = b'{"name":5,"name":"kept","url":"https://x y/","url":"' + url + b'"}'
    created = await call(tocsin, "POST", BASE, content)
    assert created.status_code == 201, created.text
    assert created.json()["name"] == "kept"
    assert created.json()["url"] == TARGET
    content = b'{"name":"n","url":"' + url + b'","headers":{"X-A":"ok","X-A":"a\\r\\nX-B: 1"}}'
    assert_error(await call(tocsin, "POST", BASE, content), 422, "headers", "invalid")
    content = b'[{"request_time":1,"request_time":"late"}]'
    response = await call(tocsin, "POST", "/api/v1/hits", content)
    assert_error(response, 422, "[0].request_time", "invalid")
    content = b'[{"request_time":"early","request_time":1}]'
    assert (await call(tocsin, "POST", "/api/v1/hits", content)).status_code == 202


# --------------------------------------------------------------------------- wrong types

WRONG_TYPES = [
    pytest.param({"name": ["siem"]}, "name", id="name-array"),
    pytest.param({"name": {"$ne": ""}}, "name", id="name-operator-object"),
    pytest.param({"headers": {"X-Key": None}}, "headers.X-Key", id="header-null"),
    pytest.param({"headers": {"X-Key": ["a", "b"]}}, "headers.X-Key", id="header-array"),
    pytest.param({"headers": None}, "headers", id="headers-null"),
    pytest.param({"events": None}, "events", id="events-null"),
    pytest.param({"events": {"hit": True}}, "events", id="events-object"),
    pytest.param({"method": "post"}, "method", id="method-lower-case"),
    pytest.param({"method": ["POST"]}, "method", id="method-array"),
    pytest.param({"format": None}, "format", id="format-null"),
    pytest.param({"enabled": None}, "enabled", id="enabled-null"),
    pytest.param({"verify_tls": "false"}, "verify_tls", id="verify-tls-string"),
    pytest.param({"connection_timeout": [20]}, "connection_timeout", id="timeout-array"),
]


@pytest.mark.parametrize("kind", ["put", "patch"])
@pytest.mark.parametrize(("fields", "field"), WRONG_TYPES)
async def test_wrong_types_are_refused_by_put_and_patch_naming_the_field(
    tocsin: Running, kind: str, fields: dict[str, Any], field: str
) -> None:
    response, where = await settings_call(tocsin, kind, fields)
    assert_error(response, 422, field, "invalid")
    await assert_nothing_saved(tocsin, kind, where)


@pytest.mark.parametrize(
    ("hit_fields", "field"),
    [
        pytest.param({"type": {"$ne": None}}, "[0].type", id="type-operator-object"),
        pytest.param({"remote_port": 1e2}, "[0].remote_port", id="port-float"),
        pytest.param({"point": "post"}, "[0].point", id="point-string"),
        pytest.param({"id": {"0": "a", "1": "b"}}, "[0].id", id="id-object"),
        pytest.param({"response_time": "5ms"}, "[0].response_time", id="response-time-string"),
        pytest.param({"tor": False}, "[0].tor", id="tor-bool"),
        pytest.param({"experimental": None}, "[0].experimental", id="experimental-null"),
    ],
)
async def test_wrong_types_in_hits_are_refused_naming_the_field(
    tocsin: Running, hit_fields: dict[str, Any], field: str
) -> None:
    content = orjson.dumps([hit(**hit_fields)])
    assert_error(await call(tocsin, "POST", "/api/v1/hits", content), 422, field, "invalid")


# --------------------------------------------------------------------------- clients that leave


@pytest.mark.parametrize(
    ("method", "path"),
    [pytest.param("POST", "/api/v1/hits", id="hits"), pytest.param("POST", BASE, id="create")],
)
async def test_a_client_leaving_mid_body_is_a_400_not_an_internal_error(
    tocsin: Running, caplog: pytest.LogCaptureFixture, method: str, path: str
) -> None:
    """A sensor timing out mid-request is routine: no 500, no traceback in the log."""
    messages: list[Message] = [
        {"type": "http.request", "body": b'[{"type":', "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return messages.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"tocsin.test"),
            (b"authorization", f"Bearer {ADMIN_TOKEN}".encode()),
            (b"content-type", b"application/json"),
            (b"transfer-encoding", b"chunked"),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("tocsin.test", 80),
    }
    async with asyncio.timeout(20):
        await create_app(tocsin.runtime)(scope, receive, send)
    start, *chunks = sent
    assert start["status"] == 400
    body = orjson.loads(b"".join(chunk.get("body", b"") for chunk in chunks))
    assert body["error"]["field"] == "body"
    assert body["error"]["code"] == "incomplete"
    assert "unexpected error" not in caplog.text
