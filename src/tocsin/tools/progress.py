"""A progress bar on standard error while a long command works, quiet off a terminal."""

from __future__ import annotations

from types import TracebackType
from typing import Self

from rich.console import Console
from rich.progress import (
    BarColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as Bar


class Progress:
    """How far through its input a command is, and how many events were accepted.

    `show=None` shows the bar only when standard error is a terminal, so a pipe or a log
    file never fills with redrawn lines.
    """

    def __init__(self, name: str, *, show: bool | None) -> None:
        console = Console(stderr=True)
        visible = console.is_terminal if show is None else show
        self._bar = Bar(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[accepted]:>10,} accepted"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=not visible,
            transient=False,
        )
        self._name = name
        self._task: TaskID | None = None

    def start(self, total: int | None, unit: str) -> None:
        del unit  # bytes or items: the bar shows a fraction either way
        self._task = self._bar.add_task(self._name, total=total, accepted=0)

    def advance(self, done: int, accepted: int) -> None:
        if self._task is not None:
            self._bar.update(self._task, completed=done, accepted=accepted)

    def __enter__(self) -> Self:
        self._bar.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._bar.stop()
