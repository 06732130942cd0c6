"""The sender's per-request shortcuts: each gives what the long way gave.

The connector restarts an attempt's deadline once the request has its connection (the
hostile-receiver integration tests check the timeouts against real sockets); here a fake
connection step stands in for aiohttp's, so no test touches the network.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import aiohttp
import pytest

from tocsin import formats
from tocsin.delivery import sender, signing
from tocsin.models import BodyFormat, WebhookSettings

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
CONNECTING = 0.05  # seconds the fake connection step takes
CONNECTED = object()  # what it returns


def merged_the_long_way(
    settings: WebhookSettings, secrets: Sequence[str], webhook_id: str, body: bytes, at: int
) -> dict[str, str]:
    """request_headers as it was written first: every layer merged by lower-case name."""
    by_name: dict[str, tuple[str, str]] = {}
    defaults = {
        "Content-Type": formats.content_type(settings.format),
        "User-Agent": sender.USER_AGENT,
    }
    signed = signing.headers(secrets, webhook_id, at, body)
    for layer in (defaults, settings.headers, signed):
        for name, value in layer.items():
            by_name[name.lower()] = (name, value)
    return dict(by_name.values())


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Key": "k"},
        {"content-type": "text/plain", "X-A": "1", "x-a": "2"},
        {"USER-AGENT": "mine", "Webhook-Signature": "v1,forged", "webhook-ID": "msg_forged"},
    ],
)
@pytest.mark.parametrize("body_format", [BodyFormat.JSON_ARRAY, BodyFormat.NDJSON])
def test_request_headers_are_the_same_names_values_and_order_as_before(
    headers: dict[str, str], body_format: BodyFormat
) -> None:
    settings = WebhookSettings(
        name="n", url="https://x.example/", headers=headers, format=body_format
    )
    made = sender.request_headers(settings, [SECRET, SECRET], "msg_1", b"[]", 1700000000)
    expected = merged_the_long_way(settings, [SECRET, SECRET], "msg_1", b"[]", 1700000000)
    assert list(made.items()) == list(expected.items())


def test_timeouts_are_shared_per_pair_of_settings_and_keep_their_values() -> None:
    limits = sender._limits(20.0, 15.0)
    assert limits is sender._limits(20.0, 15.0)
    assert limits == aiohttp.ClientTimeout(total=None, sock_connect=20.0, sock_read=15.0)
    assert sender._limits(1, 1).sock_read == 1
    assert type(sender._limits(1, 1).sock_read) is int  # as the settings gave it


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://Hooks.Example.com:8443/path?q=1", "hooks.example.com"),
        ("https://[::1]:8443/", "::1"),
        ("https://127.1/", "127.1"),
        ("https://user:pass@192.0.2.1/", "192.0.2.1"),
    ],
)
def test_the_checked_host_is_the_one_urlsplit_reads(url: str, host: str) -> None:
    assert sender._host(url) == host
    assert sender._host(url) == host  # and again, from the cache


@pytest.fixture
def slow_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    """aiohttp's connection step replaced by one that takes CONNECTING seconds."""

    async def connect(*_: object, **__: object) -> object:
        await asyncio.sleep(CONNECTING)
        return CONNECTED

    monkeypatch.setattr(aiohttp.TCPConnector, "connect", connect)


async def connect_under(cap: float, request_timeout: float) -> tuple[float, float | None]:
    """Connect inside an attempt's deadline: (when connected, when the deadline is then)."""
    connector = sender._DeadlineConnector()
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(cap) as deadline:
            pending = sender._DEADLINE.set((deadline, request_timeout))
            try:
                connection = await connector.connect(None, [], aiohttp.ClientTimeout())  # type: ignore[arg-type]
                connected_at = loop.time()
            finally:
                sender._DEADLINE.reset(pending)
            assert connection is CONNECTED
            return connected_at, deadline.when()
    finally:
        await connector.close()


@pytest.mark.usefixtures("slow_connection")
async def test_once_connected_the_response_has_request_timeout_left() -> None:
    connected_at, due = await connect_under(cap=60.0, request_timeout=1.0)
    assert due is not None
    assert connected_at + 1.0 - 0.01 <= due <= connected_at + 1.0


@pytest.mark.usefixtures("slow_connection")
async def test_never_more_than_the_connection_and_request_cap_in_all() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    _, due = await connect_under(cap=0.5, request_timeout=1.0)
    assert due is not None
    assert started + 0.5 <= due <= started + 0.5 + CONNECTING  # still the cap, not later


@pytest.mark.usefixtures("slow_connection")
async def test_a_connection_outside_an_attempt_moves_no_deadline() -> None:
    connector = sender._DeadlineConnector()
    try:
        async with asyncio.timeout(60.0) as deadline:
            before = deadline.when()
            await connector.connect(None, [], aiohttp.ClientTimeout())  # type: ignore[arg-type]
            assert deadline.when() == before
    finally:
        await connector.close()


async def test_the_sender_connects_through_the_deadline_connector() -> None:
    sending = sender.Sender()
    try:
        assert isinstance(sending._client().connector, sender._DeadlineConnector)
        assert not sending._client().trace_configs
    finally:
        await sending.close()
