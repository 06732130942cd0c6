"""What every tocsin command shares: flags with their TOCSIN_* twin shown in --help,
errors as one line, and running until Ctrl-C."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from tocsin.errors import TocsinError

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def opt(name: str, env: str, **kwargs: Any) -> Callable[[F], F]:
    kwargs.setdefault("show_default", True)
    return click.option(name, envvar=env, show_envvar=True, **kwargs)


def guard(fn: Callable[[], T]) -> T:
    """Turn tocsin's own errors into a one-line message and exit status 2."""
    try:
        return fn()
    except TocsinError as exc:
        click.echo(f"tocsin: {exc}", err=True)
        sys.exit(2)


class OneLineErrors(click.Group):
    """A click group whose usage errors are one line, not click's usage block.

    `tocsin: Invalid value for '--status' ...: 99 is not in the range 200<=x<=599 (see
    tocsin listen --help)`, with click's exit status (2).
    """

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            return super().main(*args, **kwargs)
        except click.ClickException as exc:
            context = getattr(exc, "ctx", None)
            hint = f" (see {context.command_path} --help)" if context is not None else ""
            click.echo(f"tocsin: {exc.format_message()}{hint}", err=True)
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            click.echo("tocsin: aborted", err=True)
            sys.exit(1)


async def until_signalled() -> None:
    """Return on SIGINT or SIGTERM (the caller then stops what it runs, in order)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(number, stop.set)
    await stop.wait()
