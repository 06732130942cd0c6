"""Sends one request body to one webhook and says, in words, what happened.

Never raises for a network failure: every outcome, good or bad, is an AttemptOutcome.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from functools import lru_cache
from urllib.parse import urlsplit

import aiohttp
from aiohttp.connector import Connection
from aiohttp.tracing import Trace

from tocsin import __version__, formats
from tocsin.clock import Clock, SystemClock
from tocsin.config import Network
from tocsin.delivery import guard, signing, tls
from tocsin.errors import TargetRefused
from tocsin.models import AttemptOutcome, WebhookSettings

RESPONSE_CAP = 4096
USER_AGENT = f"tocsin/{__version__}"


class Sender:
    """One aiohttp session for every webhook; connections are pooled per target and TLS setup."""

    def __init__(
        self,
        *,
        allowed_networks: Sequence[Network] = (),
        clock: Clock | None = None,
        resolver: aiohttp.abc.AbstractResolver | None = None,
    ) -> None:
        self._allowed = tuple(allowed_networks)
        self._clock = clock or SystemClock()
        self._resolver = resolver
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            resolver = guard.GuardedResolver(self._allowed, self._resolver)
            connector = _DeadlineConnector(limit=0, resolver=resolver, ttl_dns_cache=10)
            self._session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(
        self,
        settings: WebhookSettings,
        *,
        secrets: Sequence[str],
        webhook_id: str,
        body: bytes,
        on_written: Callable[[], None] | None = None,
    ) -> AttemptOutcome:
        """POST (or PUT) the body once; no retries.

        The body is let go once written (`_SentOnce`): the caller should hold no reference
        of its own while the request runs, so that waiting for a slow receiver's answer
        keeps no body in memory.
        """
        started_at = self._clock.now()
        start = time.perf_counter()
        size = len(body)
        exchange = self._exchange(
            settings, secrets, webhook_id, body, started_at, on_written=on_written
        )
        del body
        status, error, text = await exchange
        return AttemptOutcome(
            ok=error is None,
            status_code=status,
            error=None if error is None else valid_text(error),
            response_body=text,
            duration_ms=round((time.perf_counter() - start) * 1000, 3),
            started_at=started_at,
            request_size=size,
        )

    async def _exchange(
        self,
        settings: WebhookSettings,
        secrets: Sequence[str],
        webhook_id: str,
        body: bytes,
        now: float,
        *,
        on_written: Callable[[], None] | None,
    ) -> tuple[int | None, str | None, str | None]:
        limits = _limits(settings.connection_timeout, settings.request_timeout)
        try:
            # Inside the try: a bad stored secret or certificate is a failed attempt, recorded.
            headers = request_headers(settings, secrets, webhook_id, body, int(now))
            payload = _SentOnce(
                body, content_type=formats.content_type(settings.format), on_written=on_written
            )
            del body
            guard.check_address(_host(settings.url), self._allowed)
            async with asyncio.timeout(
                settings.connection_timeout + settings.request_timeout
            ) as deadline:
                pending = _DEADLINE.set((deadline, settings.request_timeout))
                try:
                    return await self._request(settings, headers, payload, limits)
                finally:
                    _DEADLINE.reset(pending)
        except Exception as exc:
            return None, describe_error(exc, settings), None

    async def _request(
        self,
        settings: WebhookSettings,
        headers: Mapping[str, str],
        body: _SentOnce,
        limits: aiohttp.ClientTimeout,
    ) -> tuple[int | None, str | None, str | None]:
        context = tls.client_context(settings.verify_tls, settings.ca_certificate)
        async with self._client().request(
            settings.method,
            settings.url,
            data=body,
            headers=headers,
            ssl=context,
            timeout=limits,
            allow_redirects=False,
        ) as response:
            text = await read_capped(response)
            if 200 <= response.status < 300:  # noqa: PLR2004 - 2xx is success (SPEC 4)
                return response.status, None, text
            return response.status, status_error(response), text


_WRITE_PIECE = 16 << 10  # bytes: the largest TLS record


class _SentOnce(aiohttp.BytesPayload):
    """A request body that lets go of its bytes once they are written in full.

    A receiver that reads a request and never answers would otherwise keep its body in
    memory until the request times out (up to connection + request timeout), for every
    request in flight to it. Written, it is also consumed: aiohttp then never writes it
    a second time (its one retry of a PUT whose reused connection turned out closed);
    that attempt fails and is retried on tocsin's schedule instead.
    """

    def __init__(
        self, value: bytes, *, content_type: str, on_written: Callable[[], None] | None
    ) -> None:
        super().__init__(value, content_type=content_type)
        self._on_written = on_written

    async def write_with_length(
        self, writer: aiohttp.abc.AbstractStreamWriter, content_length: int | None
    ) -> None:
        # In pieces of one TLS record: the TLS layer's outgoing buffer grows to the largest
        # piece written at once and keeps that size for the connection's life, so one
        # large write would leave every connection holding a buffer the body's size.
        # Copies, not views: a transport that keeps a piece until it is flushed (uvloop
        # does) then holds 16 KiB, not the whole body.
        body = self._value if content_length is None else self._value[:content_length]
        for start in range(0, len(body), _WRITE_PIECE):
            await writer.write(body[start : start + _WRITE_PIECE])
        del body
        self._value = b""
        self._consumed = True
        if self._on_written is not None:
            self._on_written()


_DEADLINE: ContextVar[tuple[asyncio.Timeout, float] | None] = ContextVar(
    "tocsin_deadline", default=None
)
"""The attempt's deadline and its request_timeout, for the connector to restart."""


class _DeadlineConnector(aiohttp.TCPConnector):
    """Restarts the attempt's deadline once the request has its connection, new or pooled.

    Once connected, the response has request_timeout left, never more than the
    connection + request cap in all. aiohttp's sock_read restarts with every byte, so
    alone it would let a receiver that trickles its answer hold the attempt until the cap.
    `connect` is the one call every request makes for its connection (after TCP and TLS
    for a new one); hooking it costs a context variable, where a TraceConfig made every
    request send half a dozen signals.
    """

    async def connect(
        self,
        req: aiohttp.ClientRequest,
        traces: list[Trace],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 - aiohttp's names: it passes keywords
    ) -> Connection:
        connection = await super().connect(req, traces, timeout)
        if (pending := _DEADLINE.get()) is not None:
            try:
                _restart(*pending)
            except BaseException:
                connection.close()
                raise
        return connection


def _restart(deadline: asyncio.Timeout, seconds: float) -> None:
    """From now, `seconds` left on the deadline, or what it had if that is sooner."""
    cap, due = deadline.when(), asyncio.get_running_loop().time() + seconds
    deadline.reschedule(due if cap is None else min(cap, due))


@lru_cache(maxsize=256, typed=True)
def _limits(connect: float, request: float) -> aiohttp.ClientTimeout:
    """aiohttp's timeouts for a pair of settings; the object is immutable, so shared."""
    return aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=request)


@lru_cache(maxsize=4096)
def _host(url: str) -> str:
    """The host of a webhook URL, as the guard checks it."""
    return urlsplit(url).hostname or ""


def valid_text(text: str) -> str:
    """Text a person and a database can take: bytes that were not UTF-8 become U+FFFD.

    aiohttp decodes the reason phrase and headers with surrogateescape, so a receiver
    can put lone surrogates into an error message; they cannot be encoded to store it.
    """
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # a surrogate that is no escaped byte
        return text.encode("utf-8", "replace").decode("utf-8")


def request_headers(
    settings: WebhookSettings,
    secrets: Sequence[str],
    webhook_id: str,
    body: bytes,
    timestamp: int,
) -> dict[str, str]:
    """Content-Type and User-Agent (the user's headers may override them), then signatures.

    Names are compared without case: of two headers differing only in case the later
    wins, and the signature headers are always tocsin's own.
    """
    content_type = formats.content_type(settings.format)
    signed = signing.headers(secrets, webhook_id, timestamp, body)
    if not settings.headers:  # the common case: nothing to merge, the names all differ
        return {"Content-Type": content_type, "User-Agent": USER_AGENT, **signed}
    by_name = {
        "content-type": ("Content-Type", content_type),
        "user-agent": ("User-Agent", USER_AGENT),
    }
    for layer in (settings.headers, signed):
        for name, value in layer.items():
            by_name[name.lower()] = (name, value)
    return dict(by_name.values())


async def read_capped(response: aiohttp.ClientResponse) -> str:
    """At most RESPONSE_CAP bytes of the response, as text; a bigger body is not read."""
    data = await response.content.read(RESPONSE_CAP)
    while len(data) < RESPONSE_CAP and not response.content.at_eof():
        chunk = await response.content.read(RESPONSE_CAP - len(data))
        if not chunk:
            break
        data += chunk
    if not response.content.at_eof():
        response.close()  # drop the connection rather than read a body we will not keep
    return data.decode("utf-8", errors="replace")


def status_error(response: aiohttp.ClientResponse) -> str:
    status = response.status
    if 300 <= status < 400:  # noqa: PLR2004
        location = response.headers.get("Location", "")
        return f"receiver answered HTTP {status} (redirect to {location!r} not followed)"
    return f"receiver answered HTTP {status} {response.reason or ''}".rstrip()


def describe_error(exc: BaseException, settings: WebhookSettings) -> str:
    """The failure in words a person can act on."""
    host = urlsplit(settings.url).hostname or settings.url
    if isinstance(exc, TargetRefused):
        return str(exc)
    refused = _cause(exc, guard.RefusedAddressError)
    if refused is not None:
        return f"{refused}; TOCSIN_ALLOWED_NETWORKS can allow it"
    for kind, describe in _DESCRIPTIONS:
        if isinstance(exc, kind):
            return describe(exc, host, settings)
    return f"request failed: {type(exc).__name__}: {exc}"


def _cause(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, kind):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _cert_error(exc: BaseException, host: str, _: WebhookSettings) -> str:
    assert isinstance(exc, aiohttp.ClientConnectorCertificateError)  # noqa: S101 - narrowed by table
    cert = exc.certificate_error
    reason = getattr(cert, "verify_message", None) or str(cert)
    return (
        f"TLS verification failed for {host}: {reason} "
        "(set ca_certificate to the CA that signed the receiver's certificate)"
    )


def _ssl_error(exc: BaseException, host: str, _: WebhookSettings) -> str:
    return f"TLS handshake with {host} failed: {exc}"


def _dns_error(exc: BaseException, host: str, _: WebhookSettings) -> str:
    assert isinstance(exc, aiohttp.ClientConnectorError)  # noqa: S101
    return f"DNS lookup of {host} failed: {exc.os_error.strerror or exc.os_error}"


def _connect_error(exc: BaseException, host: str, _: WebhookSettings) -> str:
    assert isinstance(exc, aiohttp.ClientConnectorError)  # noqa: S101
    if isinstance(exc.os_error, ConnectionRefusedError):
        return f"connection refused by {host}:{exc.port}"
    # asyncio's strerror is "Connect call failed (address)"; the errno says why.
    os_error = exc.os_error
    reason = os.strerror(os_error.errno) if os_error.errno else os_error.strerror or os_error
    return f"could not connect to {host}:{exc.port}: {reason}"


def _connect_timeout(_: BaseException, host: str, settings: WebhookSettings) -> str:
    return f"connect timeout: no connection to {host} within {settings.connection_timeout:g} s"


def _read_timeout(_: BaseException, host: str, settings: WebhookSettings) -> str:
    return f"read timeout: {host} sent no complete response within {settings.request_timeout:g} s"


def _disconnected(_: BaseException, host: str, __: WebhookSettings) -> str:
    return f"{host} closed the connection without a complete response"


def _reset(exc: BaseException, host: str, _: WebhookSettings) -> str:
    if "Can not write request body" in str(exc):
        # aiohttp's words when the peer hung up while the request was being written
        return f"{host} closed the connection before the request was sent"
    return f"connection to {host} failed: {exc}"


def _bad_response(exc: BaseException, host: str, _: WebhookSettings) -> str:
    return f"{host} sent a malformed HTTP response: {exc}"


_Describe = Callable[[BaseException, str, WebhookSettings], str]
_DESCRIPTIONS: tuple[tuple[type[BaseException], _Describe], ...] = (
    (aiohttp.ClientConnectorCertificateError, _cert_error),
    (aiohttp.ClientConnectorSSLError, _ssl_error),
    (aiohttp.ClientConnectorDNSError, _dns_error),
    (aiohttp.ConnectionTimeoutError, _connect_timeout),
    (aiohttp.ClientConnectorError, _connect_error),
    (aiohttp.SocketTimeoutError, _read_timeout),
    (TimeoutError, _read_timeout),
    (aiohttp.ServerDisconnectedError, _disconnected),
    (aiohttp.ClientResponseError, _bad_response),
    (aiohttp.ClientPayloadError, _bad_response),
    (ssl.SSLError, _ssl_error),
    (aiohttp.ClientError, _reset),
    (OSError, _reset),
)
