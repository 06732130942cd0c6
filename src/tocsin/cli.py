"""The `tocsin` command: serve, dispatch, migrate, listen, report, demo."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import click

from tocsin import __version__
from tocsin.config import (
    DEFAULT_DATABASE_URL,
    MIN_RETENTION_DAYS,
    Settings,
    parse_networks,
    sqlite_path,
)
from tocsin.crypto import Vault, open_vault
from tocsin.errors import ConfigError
from tocsin.store import is_postgres, open_store
from tocsin.tools.demo import demo
from tocsin.tools.listen import listen
from tocsin.tools.options import OneLineErrors as _OneLineErrors
from tocsin.tools.options import guard as _guard
from tocsin.tools.options import opt as _opt
from tocsin.tools.options import until_signalled
from tocsin.tools.report import report

F = TypeVar("F", bound=Callable[..., Any])


def _database_option(fn: F) -> F:
    return click.option(
        "--database-url",
        envvar="TOCSIN_DATABASE_URL",
        show_envvar=True,
        default=DEFAULT_DATABASE_URL,
        show_default=True,
        help="sqlite:///path.db (embedded, one process) or "
        "postgresql://user@host:5432/database (shared by serve and dispatch processes).",
    )(fn)


def _secret_key_option(fn: F) -> F:
    return click.option(
        "--secret-key",
        envvar="TOCSIN_SECRET_KEY",
        show_envvar=True,
        default=None,
        help="Fernet key(s) encrypting stored secrets, current first, comma-separated. "
        "Default: a key file beside the SQLite database (created with mode 0600). "
        "Required with PostgreSQL, the same in every process.",
    )(fn)


def _freeze_startup_objects() -> None:
    """Leave what startup built (modules, the app's routes and schemas, about 110,000
    objects) out of the garbage collector's full collections from now on.

    Each full collection walks every tracked object with the whole process paused,
    event loop and store thread alike: about 50 ms at a time under a flood of hits, for
    objects that live as long as the process. The garbage made so far goes first.
    """
    gc.collect()
    gc.freeze()


def _run(coro: Any) -> Any:
    try:
        import uvloop  # noqa: PLC0415 - optional speed-up

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


@click.group(cls=_OneLineErrors)
@click.version_option(__version__, prog_name="tocsin")
def main() -> None:
    """tocsin: security events in, Wallarm-format webhooks out."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


@main.command()
@_database_option
@_secret_key_option
def migrate(database_url: str, secret_key: str | None) -> None:
    """Bring the database schema up to date."""

    async def go() -> list[int]:
        store = open_store(database_url, vault=open_vault(secret_key, database_url))
        try:
            return await store.migrate()
        finally:
            await store.close()

    applied = _guard(lambda: _run(go()))
    click.echo(f"applied migrations {applied}" if applied else "schema is up to date")


@main.command("generate-key")
def generate_key() -> None:
    """Print a new secret key for TOCSIN_SECRET_KEY."""
    click.echo(Vault.generate_key().decode())


@main.command("rotate-key")
@_database_option
@_secret_key_option
def rotate_key(database_url: str, secret_key: str | None) -> None:
    """Re-encrypt every stored secret under the first (current) key.

    Put the new key first in TOCSIN_SECRET_KEY (or the key file), keep the old one after
    it, run this, then drop the old key. API tokens stay valid while their key is listed.
    """

    async def go() -> int:
        store = open_store(database_url, vault=open_vault(secret_key, database_url))
        try:
            await store.migrate()
            return await store.reencrypt()
        finally:
            await store.close()

    count = _guard(lambda: _run(go()))
    click.echo(f"re-encrypted the secrets of {count} integrations")


def _options(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    """Several click options as one decorator, in the order given."""

    def apply(fn: F) -> F:
        for decorator in reversed(decorators):
            fn = decorator(fn)
        return fn

    return apply


# What an empty database starts with: only `serve` creates it.
_first_client_options = _options(
    _opt(
        "--client-name",
        "TOCSIN_CLIENT_NAME",
        default="tocsin",
        help="client_name of the first client.",
    ),
    _opt("--cloud", "TOCSIN_CLOUD", default="local", help="cloud label of the first client."),
    _opt(
        "--console-url",
        "TOCSIN_CONSOLE_URL",
        default="",
        show_default="http://<host>:<port>",
        help="Base of links in notifications.",
    ),
)

# How notifications are written and where they may go: the same for serve and dispatch.
_notification_options = _options(
    _opt(
        "--partner-name",
        "TOCSIN_PARTNER_NAME",
        default="tocsin",
        help="Operator named in test messages.",
    ),
    _opt(
        "--summary-prefix",
        "TOCSIN_SUMMARY_PREFIX",
        default="[Wallarm]",
        help="Prefix of summaries.",
    ),
    _opt(
        "--allow-http/--no-allow-http",
        "TOCSIN_ALLOW_HTTP",
        default=False,
        help="Permit http:// targets.",
    ),
    _opt(
        "--allowed-networks",
        "TOCSIN_ALLOWED_NETWORKS",
        default="",
        show_default="none",
        help="CIDRs targets may resolve to.",
    ),
)

# How much one worker takes on, and how long what it did is kept: the same for serve and
# dispatch.
_worker_options = _options(
    _opt(
        "--max-batch",
        "TOCSIN_MAX_BATCH",
        default=500,
        type=click.IntRange(1, 500),
        help="Notifications/request.",
    ),
    _opt(
        "--max-in-flight",
        "TOCSIN_MAX_IN_FLIGHT",
        default=4,
        type=click.IntRange(1, 64),
        help="Per integration.",
    ),
    _opt(
        "--lease-margin",
        "TOCSIN_LEASE_MARGIN",
        default=10.0,
        type=click.FloatRange(1, 600),
        help="Seconds.",
    ),
    _opt(
        "--retention-days",
        "TOCSIN_RETENTION_DAYS",
        default=30.0,
        type=click.FloatRange(MIN_RETENTION_DAYS),
        help="Days the delivery log and events are kept, then pruned.",
    ),
)


@main.command()
@_database_option
@_secret_key_option
@_opt("--host", "TOCSIN_HOST", default="127.0.0.1", help="Address to listen on.")
@_opt(
    "--port", "TOCSIN_PORT", default=8080, type=click.IntRange(1, 65535), help="Port to listen on."
)
@_first_client_options
@_notification_options
@_opt("--admin-token", "TOCSIN_ADMIN_TOKEN", default=None, help="Token of the first administrator.")
@_opt(
    "--operator-token",
    "TOCSIN_OPERATOR_TOKEN",
    default=None,
    help="Deployment-wide token for /api/v1/clients (unset: /clients is closed).",
)
@_opt(
    "--max-body-bytes",
    "TOCSIN_MAX_BODY_BYTES",
    default=10 * 1024 * 1024,
    type=click.IntRange(1024, 1024**3),
    help="Largest request body (413 past it).",
)
@_opt(
    "--max-header-bytes",
    "TOCSIN_MAX_HEADER_BYTES",
    default=64 * 1024,
    type=click.IntRange(1024, 16 * 1024**2),
    help="Largest request line and headers together (431 past it).",
)
@_opt(
    "--max-header-count",
    "TOCSIN_MAX_HEADER_COUNT",
    default=100,
    type=click.IntRange(8, 10_000),
    help="Most header lines in a request (431 past it).",
)
@_opt(
    "--header-timeout",
    "TOCSIN_HEADER_TIMEOUT",
    default=10.0,
    type=click.FloatRange(0.5, 3600),
    help="Seconds a client has to send a request line and headers (then 408, closed).",
)
@_opt(
    "--ingest-rate",
    "TOCSIN_INGEST_RATE",
    default=100_000.0,
    type=click.FloatRange(0),
    help="Events/s per token, then 429 (0: no limit).",
)
@_opt(
    "--ingest-burst",
    "TOCSIN_INGEST_BURST",
    default=200_000.0,
    type=click.FloatRange(1),
    help="Events a token may send at once above its rate.",
)
@_worker_options
@_opt(
    "--sqlite-synchronous",
    "TOCSIN_SQLITE_SYNCHRONOUS",
    default="FULL",
    type=click.Choice(["NORMAL", "FULL", "EXTRA"], case_sensitive=False),
    help="SQLite durability.",
)
@_opt(
    "--console-secure-cookies/--no-console-secure-cookies",
    "TOCSIN_CONSOLE_SECURE_COOKIES",
    default=False,
    help="Console cookies only over https, also when served over http behind a TLS proxy.",
)
@_opt(
    "--deliver/--no-deliver",
    "TOCSIN_DELIVER",
    default=True,
    help="Run delivery workers in this process (off: API only, `tocsin dispatch` delivers).",
)
def serve(**options: Any) -> None:
    """Run the API, the web console and the delivery workers, in one process."""
    settings = _guard(lambda: _settings(options))
    _guard(lambda: _run(_serve(settings)))


def _settings(options: dict[str, Any]) -> Settings:
    networks = parse_networks(options.pop("allowed_networks"))
    settings = Settings(allowed_networks=networks, **options)
    if not settings.deliver and sqlite_path(settings.database_url) is not None:
        raise ConfigError(
            "--no-deliver leaves delivery to `tocsin dispatch`, which needs PostgreSQL; "
            "on SQLite, serve delivers itself"
        )
    return settings


def _first_administrator(token: str, *, given: bool) -> str:
    """The line a first start prints: the token, unless the operator chose it."""
    if given:
        return (
            "Created the first administrator (admin@localhost) with the token "
            "given in TOCSIN_ADMIN_TOKEN / --admin-token."
        )
    return f"Created the first administrator. API token (shown once): {token}"


async def _serve(settings: Settings) -> None:
    import uvicorn  # noqa: PLC0415 - only the serve command needs it

    from tocsin import httpserver  # noqa: PLC0415
    from tocsin.api import create_app  # noqa: PLC0415
    from tocsin.service import Tocsin  # noqa: PLC0415

    # Bound before anything is created: on a busy port nothing happens, and a first start's
    # administrator token is printed by the start that goes on serving.
    listening = httpserver.listen(settings.host, settings.port)
    vault = open_vault(settings.secret_key, settings.database_url)
    store = open_store(
        settings.database_url,
        vault=vault,
        synchronous=settings.sqlite_synchronous,
        max_batch=settings.max_batch,
    )
    runtime = Tocsin(settings, store, vault=vault)
    token = await runtime.start(deliver=settings.deliver)
    if token is not None:
        click.echo(_first_administrator(token, given=bool(settings.admin_token)), err=True)
    server = uvicorn.Server(httpserver.config(create_app(runtime), settings))
    _freeze_startup_objects()
    click.echo(f"tocsin {__version__} serving on http://{settings.host}:{settings.port}", err=True)
    try:
        await server.serve(sockets=[listening])
    finally:
        await runtime.stop()


@main.command()
@_database_option
@_secret_key_option
@_notification_options
@_worker_options
@_opt(
    "--metrics-port",
    "TOCSIN_METRICS_PORT",
    default=None,
    type=click.IntRange(1, 65535),
    help="Serve GET /metrics (Prometheus) on this port (unset: no HTTP at all).",
)
@_opt("--metrics-host", "TOCSIN_METRICS_HOST", default="127.0.0.1", help="Address for /metrics.")
def dispatch(**options: Any) -> None:
    """Run delivery workers only (no API), beside `serve`, on a shared PostgreSQL database."""
    metrics_at = (options.pop("metrics_host"), options.pop("metrics_port"))
    settings = _guard(lambda: _dispatch_settings(options))
    _guard(lambda: _run(_dispatch(settings, metrics_at)))


def _dispatch_settings(options: dict[str, Any]) -> Settings:
    if not is_postgres(options["database_url"]):
        raise ConfigError(
            "tocsin dispatch needs a PostgreSQL database (--database-url postgresql://...): "
            "a SQLite file is used by one process only, and `tocsin serve` delivers from it"
        )
    return _settings(options)


async def _dispatch(settings: Settings, metrics_at: tuple[str, int | None]) -> None:
    from tocsin.service import Tocsin  # noqa: PLC0415 - only the worker commands need it
    from tocsin.store.postgres import describe  # noqa: PLC0415

    vault = open_vault(settings.secret_key, settings.database_url)
    store = open_store(settings.database_url, vault=vault, max_batch=settings.max_batch)
    runtime = Tocsin(settings, store, vault=vault)
    metrics_site = None
    try:
        await store.migrate()
        await runtime.dispatcher.start()
        await runtime.scheduler.start()  # trigger evaluation, retention: as in serve
        _freeze_startup_objects()
        where = describe(settings.database_url)
        click.echo(f"tocsin {__version__} dispatching from {where} (Ctrl-C to stop)", err=True)
        host, port = metrics_at
        if port is not None:
            metrics_site = await _serve_metrics(runtime, host, port)
            click.echo(f"metrics on http://{host}:{port}/metrics", err=True)
        await until_signalled()
    finally:
        if metrics_site is not None:
            await metrics_site.cleanup()
        await runtime.stop()


async def _serve_metrics(runtime: Any, host: str, port: int) -> Any:
    """GET /metrics of a dispatch process: its own counters and the deployment's gauges."""
    from aiohttp import web  # noqa: PLC0415 - only with --metrics-port

    from tocsin.metrics import CONTENT_TYPE  # noqa: PLC0415

    async def metrics(_: web.Request) -> web.Response:
        body = runtime.metrics.render(await runtime.store.stats())
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


main.add_command(demo)
main.add_command(listen)
main.add_command(report)
