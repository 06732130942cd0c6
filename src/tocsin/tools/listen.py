"""`tocsin listen`: a local receiver that prints what arrives and answers as told.

It can fail the first attempts of every delivery (`--fail-first`), answer another status
or slowly, serve HTTPS with a CA of its own, and verify signatures: enough to watch an
integration retry, time out or be disabled without writing a receiver.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any, Protocol

import click
import orjson
from standardwebhooks import Webhook

from tocsin.errors import ConfigError
from tocsin.receiver import Received, Receiver, Reply
from tocsin.tools.examine import (
    Signature,
    body_format,
    check_signature,
    header,
    notifications,
    summaries,
    verifiers,
)
from tocsin.tools.options import guard, opt
from tocsin.tools.privateca import private_ca

REMEMBERED_IDS = 100_000  # webhook-ids whose attempts are counted; the oldest go first


@dataclass(frozen=True, slots=True, kw_only=True)
class Behaviour:
    """How the receiver answers: a status, after a delay, failing first attempts."""

    fail_first: int = 0
    status: int = 200
    delay: float = 0.0

    def answer(self, _: str, attempt: int) -> tuple[int, bool]:
        """500 (on purpose) for the first `fail_first` attempts of a webhook-id, then `status`."""
        if attempt <= self.fail_first:
            return 500, True
        return self.status, False


class Policy(Protocol):
    """How a receiver answers each attempt of each webhook-id: (status, failing on purpose)."""

    @property
    def delay(self) -> float: ...

    def answer(self, webhook_id: str, attempt: int) -> tuple[int, bool]: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Seen:
    """One request as `listen` reports it."""

    at: float
    method: str
    path: str
    webhook_id: str
    attempt: int
    status: int
    failed_on_purpose: bool
    signature: Signature
    format: str
    notifications: list[Any] | None


class Attempts:
    """How many times each webhook-id has arrived (retries keep their id); thread-safe."""

    def __init__(self, capacity: int = REMEMBERED_IDS) -> None:
        self._capacity = capacity
        self._counts: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()

    def count(self, webhook_id: str) -> int:
        with self._lock:
            attempt = self._counts.pop(webhook_id, 0) + 1
            self._counts[webhook_id] = attempt
            if len(self._counts) > self._capacity:
                self._counts.popitem(last=False)
            return attempt


class Listener:
    """A `Receiver`'s respond function: answers per `Behaviour`, shows each request."""

    def __init__(
        self,
        behaviour: Policy,
        checks: tuple[Webhook, ...],
        show: Callable[[Seen], None],
    ) -> None:
        self.behaviour = behaviour
        self._checks = checks
        self._show = show
        self._attempts = Attempts()

    def trust(self, checks: tuple[Webhook, ...]) -> None:
        """Verify from now on with these secrets (known once the integration exists)."""
        self._checks = checks

    def __call__(self, _: int, received: Received) -> Reply:
        seen = self.examine(received)
        self._show(seen)
        return Reply(status=seen.status, delay=self.behaviour.delay, body=_reply_body(seen))

    def examine(self, received: Received) -> Seen:
        webhook_id = header(received, "webhook-id")
        attempt = self._attempts.count(webhook_id)
        status, on_purpose = self.behaviour.answer(webhook_id, attempt)
        return Seen(
            at=received.at,
            method=received.method,
            path=received.path,
            webhook_id=webhook_id,
            attempt=attempt,
            status=status,
            failed_on_purpose=on_purpose,
            signature=check_signature(received, self._checks),
            format=body_format(received),
            notifications=notifications(received),
        )


def _reply_body(seen: Seen) -> bytes:
    if seen.failed_on_purpose:
        return b"failing on purpose, to show a retry"
    return b"ok" if seen.status < 300 else b"tocsin listen --status"  # noqa: PLR2004


def describe(seen: Seen, on_purpose: str = "--fail-first") -> str:
    """A line a person can read, then one line per notification's summary."""
    stamp = time.strftime("%H:%M:%S", time.localtime(seen.at))
    head = f"{stamp} {seen.method} {seen.path} webhook-id={seen.webhook_id or '-'}"
    answer = f"attempt {seen.attempt} -> {seen.status}"
    parts = [head + " " + answer + (f" ({on_purpose})" if seen.failed_on_purpose else "")]
    if seen.signature.verdict == "ok":
        parts.append("signature ok")
    elif seen.signature.verdict == "invalid":
        parts.append(f"signature INVALID: {seen.signature.reason}")
    if seen.notifications is None:
        parts.append("body is neither a JSON array nor NDJSON")
        return "; ".join(parts)
    parts.append(f"{plural(len(seen.notifications), 'notification')} ({seen.format})")
    lines = ["; ".join(parts)]
    lines.extend(f"  {summary}" for summary in summaries(seen.notifications))
    return "\n".join(lines)


def plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}" + ("" if count == 1 else "s")


def as_json(seen: Seen) -> str:
    """One JSON object per request, for `jq` and scripts."""
    record = {
        "time": seen.at,
        "method": seen.method,
        "path": seen.path,
        "webhook_id": seen.webhook_id,
        "attempt": seen.attempt,
        "status": seen.status,
        "failed_on_purpose": seen.failed_on_purpose,
        "signature": seen.signature.verdict,
        "signature_error": seen.signature.reason,
        "format": seen.format,
        "notifications": seen.notifications,
    }
    return orjson.dumps(record).decode()


def printer(*, json_lines: bool) -> Callable[[Seen], None]:
    """Print each request whole, from whichever thread answers it, never interleaved."""
    lock = threading.Lock()
    render = as_json if json_lines else describe

    def show(seen: Seen) -> None:
        text = render(seen)
        with lock:
            click.echo(text)

    return show


def wait_for_signal() -> None:
    """Return on SIGINT (Ctrl-C) or SIGTERM: both are an orderly stop."""
    stop = threading.Event()

    def stop_now(_: int, __: FrameType | None) -> None:
        stop.set()

    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, stop_now)
    while not stop.wait(0.5):
        pass


@click.command()
@opt("--host", "TOCSIN_LISTEN_HOST", default="127.0.0.1", help="Address to listen on.")
@opt(
    "--port",
    "TOCSIN_LISTEN_PORT",
    default=9000,
    type=click.IntRange(0, 65535),
    help="Port (0: any free one).",
)
@opt(
    "--secret",
    "TOCSIN_LISTEN_SECRET",
    multiple=True,
    help="The integration's whsec_ signing secret: each request is reported as signature "
    "ok or INVALID (why). Repeat it (space-separated in the environment) to accept "
    "either of two secrets, as during a rotation.",
)
@opt(
    "--fail-first",
    "TOCSIN_LISTEN_FAIL_FIRST",
    default=0,
    type=click.IntRange(0),
    help="Answer 500 to the first N requests of each webhook-id (retries keep their id).",
)
@opt(
    "--status",
    "TOCSIN_LISTEN_STATUS",
    default=200,
    type=click.IntRange(200, 599),
    help="Status of every other answer.",
)
@opt(
    "--delay",
    "TOCSIN_LISTEN_DELAY",
    default=0.0,
    type=click.FloatRange(0, 600),
    help="Seconds to wait before answering (past the integration's request_timeout, "
    "tocsin records a timeout).",
)
@opt(
    "--tls/--no-tls",
    "TOCSIN_LISTEN_TLS",
    default=False,
    help="Serve HTTPS with a certificate from a new private CA, whose PEM is printed "
    "for the integration's ca_certificate.",
)
@click.option(
    "--json/--no-json",
    "json_lines",
    envvar="TOCSIN_LISTEN_JSON",
    show_envvar=True,
    default=False,
    help="One JSON object per request on standard output instead of text.",
)
def listen(**options: Any) -> None:
    """A local receiver that prints each incoming request and its notifications."""
    behaviour = Behaviour(
        fail_first=options["fail_first"], status=options["status"], delay=options["delay"]
    )
    checks = guard(lambda: verifiers(tuple(options["secret"])))
    respond = Listener(behaviour, checks, printer(json_lines=options["json_lines"]))
    authority = private_ca(options["host"]) if options["tls"] else None
    receiver = Receiver(
        tls=authority.server if authority else None,
        respond=respond,
        host=options["host"],
        port=options["port"],
        keep=False,
    )
    guard(lambda: started(receiver, options["host"], options["port"]))
    if authority is not None:
        click.echo("CA certificate (the integration's ca_certificate):", err=True)
        click.echo(authority.ca_pem, err=True, nl=False)
    click.echo(f"listening on {receiver.url} (Ctrl-C to stop)", err=True)
    try:
        wait_for_signal()
    finally:
        receiver.stop()


def started(receiver: Receiver, host: str, port: int) -> Receiver:
    """The receiver listening, or one line saying why it cannot (a busy port)."""
    try:
        return receiver.start()
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ConfigError(f"cannot listen on {host}:{port}: {reason}") from exc
