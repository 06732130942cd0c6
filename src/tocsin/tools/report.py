"""`tocsin report`: events from a file (or standard input) into a running tocsin.

Batches go one at a time, in the order of the file, so that a refusal stops the report
exactly at the line refused: everything before it is accepted, nothing after it is sent.
A 429 or 5xx, or a connection refused once the server has answered, is retried with
backoff: the server stored nothing of that request. A connection broken after the
request was sent is not retried, since the server may have stored it, and a retry could
report those events twice; the message says which lines are in doubt.
"""

from __future__ import annotations

import asyncio
import random
import re
import ssl
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import aiohttp
import click
import orjson
from yarl import URL

from tocsin import __version__
from tocsin.errors import ConfigError, TocsinError
from tocsin.tools.options import guard, opt
from tocsin.tools.progress import Progress
from tocsin.tools.source import InputError, Item, Source, read

MAX_BODY = 4 * 1024 * 1024  # bytes per request: well under the server's 10 MiB default
MAX_WAIT = 30.0  # seconds between two tries at most
ONE_HOUR = 3600.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Kind:
    """An ingestion route: an array of events per request, or one report per request."""

    path: str
    noun: str
    batched: bool


KINDS = {
    "hits": Kind(path="api/v1/hits", noun="hit", batched=True),
    "vulnerabilities": Kind(path="api/v1/vulnerabilities", noun="vulnerability", batched=True),
    "scope-changes": Kind(path="api/v1/scope-changes", noun="scope change", batched=False),
    "api-changes": Kind(path="api/v1/api-changes", noun="API-change report", batched=False),
}


class ReportStoppedError(TocsinError):
    """The report ended before the end of the input (exit status 1)."""

    def __init__(self, message: str, *, where: str | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.where = where
        self.field = field


@dataclass(slots=True, kw_only=True)
class Tally:
    """What the report did so far: the summary it prints."""

    accepted: int = 0
    requests: int = 0
    retries: int = 0
    started: float = field(default_factory=time.monotonic)


@dataclass(frozen=True, slots=True, kw_only=True)
class Answer:
    status: int
    payload: Any
    retry_after: str | None


def batches(items: Iterator[Item], *, size: int, max_bytes: int = MAX_BODY) -> Iterator[list[Item]]:
    """Consecutive events, at most `size` of them and `max_bytes` of JSON, per request."""
    batch: list[Item] = []
    weight = 2
    try:
        for item in items:
            if batch and (len(batch) >= size or weight + len(item.raw) + 1 > max_bytes):
                yield batch
                batch, weight = [], 2
            batch.append(item)
            weight += len(item.raw) + 1
    except InputError:
        if batch:
            yield batch  # the events before a bad line go, then the report stops at it
        raise
    if batch:
        yield batch


def body(kind: Kind, batch: list[Item]) -> bytes:
    if kind.batched:
        return b"[" + b",".join(item.raw for item in batch) + b"]"
    return batch[0].raw


def backoff(failures: int) -> float:
    """0.5, 1, 2, 4 ... seconds, at most MAX_WAIT, with a little jitter."""
    base = min(MAX_WAIT, 0.5 * 2.0 ** (failures - 1))
    jitter: float = random.uniform(0.8, 1.0)  # noqa: S311 - jitter, not a secret
    return base * jitter


def wait_for(answer: Answer, failures: int) -> float:
    """Retry-After when the server gives one (within reason), else the backoff."""
    try:
        asked = float(answer.retry_after or "")
    except ValueError:
        return backoff(failures)
    return min(max(asked, 0.0), ONE_HOUR)


def refused_index(field_name: str | None) -> tuple[int | None, str | None]:
    """`[3].request_time` -> (3, "request_time"): which event of the array, which field."""
    match = re.fullmatch(r"\[(\d+)\]\.?(.*)", field_name or "")
    if match is None:
        return None, field_name
    return int(match.group(1)), match.group(2) or None


class Client:
    """POSTs to the ingestion routes of one tocsin, with the token."""

    def __init__(self, session: aiohttp.ClientSession, base: URL, token: str) -> None:
        self._session = session
        self._base = base
        self._headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "User-Agent": f"tocsin-report/{__version__}",
        }

    def url(self, kind: Kind) -> URL:
        return self._base / kind.path

    async def post(self, kind: Kind, data: bytes) -> Answer:
        async with self._session.post(self.url(kind), data=data, headers=self._headers) as reply:
            text = await reply.read()
            try:
                payload = orjson.loads(text)
            except orjson.JSONDecodeError:
                payload = None
            return Answer(
                status=reply.status, payload=payload, retry_after=reply.headers.get("Retry-After")
            )


class Reporter:
    """Sends batches in order, retrying what is safe to retry, and stops at a refusal."""

    def __init__(
        self,
        client: Client,
        kind: Kind,
        *,
        retries: int,
        tally: Tally,
        accepted: Callable[[Item], None],
    ) -> None:
        self._client = client
        self._kind = kind
        self._retries = retries
        self._tally = tally
        self._accepted = accepted

    async def send(self, batch: list[Item]) -> None:
        answer = await self._post(batch)
        if answer.status == 202:  # noqa: PLR2004
            self._tally.accepted += _accepted_count(answer, len(batch))
            self._accepted(batch[-1])
            return
        if answer.status == 413 and len(batch) > 1:  # noqa: PLR2004 - too large: halve it
            half = len(batch) // 2
            await self.send(batch[:half])
            await self.send(batch[half:])
            return
        if answer.status in {400, 413, 422}:
            await self._stop_at_refused(batch, answer)
        raise ReportStoppedError(self._refusal(answer))

    async def _post(self, batch: list[Item]) -> Answer:
        failures = 0
        while True:
            self._tally.requests += 1
            try:
                answer = await self._client.post(self._kind, body(self._kind, batch))
            except aiohttp.ClientConnectorError as exc:
                if not self._tally.accepted and not failures:
                    raise ReportStoppedError(self._unreachable(exc)) from None
                answer = Answer(status=0, payload=str(exc), retry_after=None)
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise ReportStoppedError(self._in_doubt(batch, exc)) from None
            if answer.status != 429 and answer.status < 500 and answer.status != 0:  # noqa: PLR2004
                return answer
            failures += 1
            if failures > self._retries:
                raise ReportStoppedError(self._gave_up(batch, answer))
            self._tally.retries += 1
            await asyncio.sleep(wait_for(answer, failures))

    async def _stop_at_refused(self, batch: list[Item], answer: Answer) -> None:
        error = _error(answer)
        index, field_name = refused_index(error.get("field"))
        if not self._kind.batched:
            index, field_name = 0, error.get("field")
        if index is None or index >= len(batch):
            where, field_name = _span(batch), error.get("field")
        else:
            if index:
                await self.send(batch[:index])  # the events before it are good
            where = batch[index].where
        said = str(error.get("message"))
        said = said.removeprefix(f"{error.get('field')}: ")  # its index in our batch, not the file
        message = f"{where}: the server refused it: {said}"
        if field_name:
            message += f" (field {field_name})"
        raise ReportStoppedError(message, where=where, field=field_name)

    def _refusal(self, answer: Answer) -> str:
        url = self._client.url(self._kind)
        error = _error(answer).get("message") or f"HTTP {answer.status}"
        if answer.status == 401:  # noqa: PLR2004
            return f"{url} refused the token ({error}): set --token/TOCSIN_TOKEN"
        if answer.status == 403:  # noqa: PLR2004
            return f"the token may not report {self._kind.noun}s: {error}"
        if answer.status in {404, 405}:
            return f"no tocsin API at {url} (HTTP {answer.status}): check --url/TOCSIN_URL"
        return f"{url} answered HTTP {answer.status}: {error}"

    def _unreachable(self, exc: aiohttp.ClientConnectorError) -> str:
        refused = isinstance(exc.os_error, ConnectionRefusedError)
        reason = "connection refused" if refused else exc.os_error.strerror or str(exc.os_error)
        return (
            f"cannot reach tocsin at {exc.host}:{exc.port} ({reason}): "
            "is `tocsin serve` running there? (--url/TOCSIN_URL)"
        )

    def _in_doubt(self, batch: list[Item], exc: BaseException) -> str:
        reason = str(exc) or type(exc).__name__
        return (
            f"the connection broke while sending {_span(batch)} ({reason}): the server may have "
            f"stored them or not; {self._tally.accepted:,} accepted before them"
        )

    def _gave_up(self, batch: list[Item], answer: Answer) -> str:
        said = _error(answer).get("message") or answer.payload or f"HTTP {answer.status}"
        return (
            f"gave up on {_span(batch)} after {self._retries} retries ({said}); "
            f"{self._tally.accepted:,} accepted before them"
        )


def _span(batch: list[Item]) -> str:
    if len(batch) == 1:
        return batch[0].where
    return f"{batch[0].where}-{batch[-1].number}"


def _error(answer: Answer) -> dict[str, Any]:
    payload = answer.payload
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        error: dict[str, Any] = payload["error"]
        return error
    return {}


def _accepted_count(answer: Answer, sent: int) -> int:
    payload = answer.payload
    if isinstance(payload, dict) and isinstance(payload.get("accepted"), int):
        return int(payload["accepted"])
    return sent


def base_url(text: str) -> URL:
    url = URL(text)
    if url.scheme not in {"http", "https"} or not url.host:
        raise ConfigError(f"--url/TOCSIN_URL: {text!r} is not an http:// or https:// URL")
    return url if url.path.endswith("/") else url.with_path(url.path + "/")


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    kind: Kind
    url: URL
    token: str
    batch_size: int
    retries: int
    timeout: float
    ca_file: str | None


async def run(job: Job, source: Source, progress: Progress, tally: Tally) -> None:
    timeout = aiohttp.ClientTimeout(total=job.timeout)
    connector = aiohttp.TCPConnector(ssl=_tls(job.ca_file), limit=1)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        reporter = Reporter(
            Client(session, job.url, job.token),
            job.kind,
            retries=job.retries,
            tally=tally,
            accepted=lambda item: progress.advance(item.progress, tally.accepted),
        )
        size = job.batch_size if job.kind.batched else 1
        for batch in batches(source.items, size=size):
            await reporter.send(batch)


def _tls(ca_file: str | None) -> Any:
    if ca_file is None:
        return True
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"--ca-file/TOCSIN_CA_FILE: cannot use {ca_file}: {exc}") from None


def summary(
    job: Job, tally: Tally, name: str, stopped: ReportStoppedError | None
) -> dict[str, Any]:
    return {
        "kind": next(key for key, value in KINDS.items() if value == job.kind),
        "source": name,
        "accepted": tally.accepted,
        "requests": tally.requests,
        "retries": tally.retries,
        "seconds": round(time.monotonic() - tally.started, 3),
        "stopped": None
        if stopped is None
        else {"message": str(stopped), "where": stopped.where, "field": stopped.field},
    }


def say(record: dict[str, Any], kind: Kind, *, json_summary: bool) -> None:
    """The summary: always with --json; in text, unless nothing was sent at all."""
    if json_summary:
        click.echo(orjson.dumps(record).decode())
        return
    if record["stopped"] and not record["accepted"]:
        return
    noun = kind.noun if record["accepted"] == 1 else f"{kind.noun}s"
    click.echo(
        f"accepted {record['accepted']:,} {noun} from {record['source']} in "
        f"{record['seconds']:.1f} s ({record['requests']:,} requests, "
        f"{record['retries']:,} retried)"
    )


def _open(file: str) -> tuple[BinaryIO, int | None, str]:
    if file == "-":
        return sys.stdin.buffer, None, "standard input"
    path = Path(file)
    try:
        stream = path.open("rb")
    except OSError as exc:
        raise ConfigError(f"cannot read {file}: {exc.strerror}") from None
    size = path.stat().st_size if path.is_file() else None
    return stream, size, file


@click.command()
@click.argument("kind", type=click.Choice(list(KINDS)), metavar="KIND")
@click.argument("file")
@opt("--url", "TOCSIN_URL", default="http://127.0.0.1:8080", help="The running tocsin.")
@opt("--token", "TOCSIN_TOKEN", default=None, help="API token of a role that may report events.")
@opt(
    "--batch-size",
    "TOCSIN_REPORT_BATCH_SIZE",
    default=1000,
    type=click.IntRange(1, 100_000),
    help="Events per request (hits, vulnerabilities; at most 4 MiB of JSON either way).",
)
@opt(
    "--retries",
    "TOCSIN_REPORT_RETRIES",
    default=10,
    type=click.IntRange(0, 1000),
    help="Tries again after a 429, a 5xx or a refused connection, before giving up.",
)
@opt(
    "--timeout",
    "TOCSIN_REPORT_TIMEOUT",
    default=120.0,
    type=click.FloatRange(1, 3600),
    help="Seconds one request may take.",
)
@opt("--ca-file", "TOCSIN_CA_FILE", default=None, help="PEM of the CA of an https:// --url.")
@opt(
    "--progress/--no-progress",
    "TOCSIN_REPORT_PROGRESS",
    default=None,
    show_default="on a terminal",
    help="A progress bar on standard error.",
)
@click.option(
    "--json/--no-json",
    "json_summary",
    envvar="TOCSIN_REPORT_JSON",
    show_envvar=True,
    default=False,
    help="Print the summary as one JSON object.",
)
def report(kind: str, file: str, **options: Any) -> None:
    """Report the events in FILE (NDJSON or a JSON array; - for standard input).

    KIND is hits, vulnerabilities, scope-changes or api-changes. Stops at the first
    event the server refuses, saying its line; everything before it was accepted.
    """
    job = guard(lambda: _job(KINDS[kind], options))
    stream, size, name = guard(lambda: _open(file))
    tally = Tally()
    stopped: ReportStoppedError | None = None
    with stream, Progress(name, show=options["progress"]) as progress:
        try:
            source = read(stream, size)
            progress.start(source.total, source.unit)
            asyncio.run(run(job, source, progress, tally))
        except InputError as exc:
            stopped = ReportStoppedError(str(exc), where=exc.where)
        except ReportStoppedError as exc:
            stopped = exc
    say(summary(job, tally, name, stopped), job.kind, json_summary=options["json_summary"])
    if stopped is not None:
        click.echo(f"tocsin report: {stopped}", err=True)
        sys.exit(1)


def _job(kind: Kind, options: dict[str, Any]) -> Job:
    if not options["token"]:
        raise ConfigError("set --token or TOCSIN_TOKEN to an API token (role deploy or above)")
    return Job(
        kind=kind,
        url=base_url(options["url"]),
        token=options["token"],
        batch_size=options["batch_size"],
        retries=options["retries"],
        timeout=options["timeout"],
        ca_file=options["ca_file"],
    )
