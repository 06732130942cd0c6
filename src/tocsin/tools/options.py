"""What every tocsin command shares: flags with their TOCSIN_* twin shown in --help, and
errors as one line."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from tocsin.errors import TocsinError

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def opt(name: str, env: str, **kwargs: Any) -> Callable[[F], F]:
    return click.option(name, envvar=env, show_envvar=True, show_default=True, **kwargs)


def guard(fn: Callable[[], T]) -> T:
    """Turn tocsin's own errors into a one-line message and exit status 2."""
    try:
        return fn()
    except TocsinError as exc:
        click.echo(f"tocsin: {exc}", err=True)
        sys.exit(2)
