"""The `tocsin` command: serve, migrate."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from tocsin import __version__
from tocsin.config import DEFAULT_DATABASE_URL, Settings, parse_networks
from tocsin.errors import TocsinError
from tocsin.store import open_store

F = TypeVar("F", bound=Callable[..., Any])


def _database_option(fn: F) -> F:
    return click.option(
        "--database-url",
        envvar="TOCSIN_DATABASE_URL",
        show_envvar=True,
        default=DEFAULT_DATABASE_URL,
        show_default=True,
        help="sqlite:///path.db (embedded).",
    )(fn)


def _run(coro: Any) -> Any:
    try:
        import uvloop  # noqa: PLC0415 - optional speed-up

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


@click.group()
@click.version_option(__version__, prog_name="tocsin")
def main() -> None:
    """tocsin: security events in, Wallarm-format webhooks out."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


@main.command()
@_database_option
def migrate(database_url: str) -> None:
    """Bring the database schema up to date."""

    async def go() -> list[int]:
        store = open_store(database_url)
        try:
            return await store.migrate()
        finally:
            await store.close()

    applied = _guard(lambda: _run(go()))
    click.echo(f"applied migrations {applied}" if applied else "schema is up to date")


def _opt(name: str, env: str, **kwargs: Any) -> Callable[[F], F]:
    return click.option(name, envvar=env, show_envvar=True, show_default=True, **kwargs)


@main.command()
@_database_option
@_opt("--host", "TOCSIN_HOST", default="127.0.0.1", help="Address to listen on.")
@_opt(
    "--port", "TOCSIN_PORT", default=8080, type=click.IntRange(1, 65535), help="Port to listen on."
)
@_opt(
    "--client-name", "TOCSIN_CLIENT_NAME", default="tocsin", help="client_name of the first client."
)
@_opt("--cloud", "TOCSIN_CLOUD", default="local", help="cloud label of the first client.")
@_opt("--console-url", "TOCSIN_CONSOLE_URL", default="", help="Base of links in notifications.")
@_opt(
    "--partner-name",
    "TOCSIN_PARTNER_NAME",
    default="tocsin",
    help="Operator named in test messages.",
)
@_opt("--summary-prefix", "TOCSIN_SUMMARY_PREFIX", default="[Wallarm]", help="Prefix of summaries.")
@_opt(
    "--allow-http/--no-allow-http",
    "TOCSIN_ALLOW_HTTP",
    default=False,
    help="Permit http:// targets.",
)
@_opt(
    "--allowed-networks",
    "TOCSIN_ALLOWED_NETWORKS",
    default="",
    help="CIDRs targets may resolve to.",
)
@_opt("--admin-token", "TOCSIN_ADMIN_TOKEN", default=None, help="Token of the first administrator.")
@_opt(
    "--max-batch",
    "TOCSIN_MAX_BATCH",
    default=500,
    type=click.IntRange(1, 500),
    help="Notifications/request.",
)
@_opt(
    "--max-in-flight",
    "TOCSIN_MAX_IN_FLIGHT",
    default=4,
    type=click.IntRange(1, 64),
    help="Per integration.",
)
@_opt(
    "--lease-margin",
    "TOCSIN_LEASE_MARGIN",
    default=10.0,
    type=click.FloatRange(1, 600),
    help="Seconds.",
)
@_opt(
    "--sqlite-synchronous",
    "TOCSIN_SQLITE_SYNCHRONOUS",
    default="FULL",
    type=click.Choice(["NORMAL", "FULL", "EXTRA"], case_sensitive=False),
    help="SQLite durability.",
)
def serve(**options: Any) -> None:
    """Run the API, the delivery workers and (later) the console, in one process."""
    settings = _guard(lambda: _settings(options))
    _guard(lambda: _run(_serve(settings)))


def _settings(options: dict[str, Any]) -> Settings:
    networks = parse_networks(options.pop("allowed_networks"))
    return Settings(allowed_networks=networks, **options)


async def _serve(settings: Settings) -> None:
    import uvicorn  # noqa: PLC0415 - only the serve command needs it

    from tocsin.api import create_app  # noqa: PLC0415
    from tocsin.service import Tocsin  # noqa: PLC0415

    store = open_store(
        settings.database_url, synchronous=settings.sqlite_synchronous, max_batch=settings.max_batch
    )
    runtime = Tocsin(settings, store)
    token = await runtime.start()
    if token is not None:
        click.echo(f"Created the first administrator. API token (shown once): {token}", err=True)
    config = uvicorn.Config(
        create_app(runtime),
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
    )
    server = uvicorn.Server(config)
    click.echo(f"tocsin {__version__} serving on http://{settings.host}:{settings.port}", err=True)
    try:
        await server.serve()
    finally:
        await runtime.stop()


def _guard(fn: Callable[[], Any]) -> Any:
    """Turn tocsin's own errors into a one-line message and exit status 2."""
    try:
        return fn()
    except TocsinError as exc:
        click.echo(f"tocsin: {exc}", err=True)
        sys.exit(2)
