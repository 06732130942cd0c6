"""Real subprocesses for the CLI tests: their output read as it comes, always ended after.

`spawn(argv, env=...)` starts a process whose standard output and error are read line by
line on threads; `wait_for(...)` blocks until a line matches. Leaving the `with` block
interrupts it (SIGINT, as Ctrl-C), then kills it if it has not gone after 10 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

TOCSIN = str(Path(sys.executable).with_name("tocsin"))


class Spawned:
    """A running subprocess and every line it has printed so far."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.out: list[str] = []
        self.err: list[str] = []
        self._changed = threading.Condition()
        assert process.stdout is not None
        assert process.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=(process.stdout, self.out), daemon=True),
            threading.Thread(target=self._read, args=(process.stderr, self.err), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: object, lines: list[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            with self._changed:
                lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    def wait_for(self, predicate: Callable[[Spawned], bool], timeout: float = 20.0) -> bool:
        """Block until the predicate holds, the process ends, or the timeout passes."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0 or (self.process.poll() is not None and not self._reading()):
                    return predicate(self)
                self._changed.wait(min(left, 0.1))
        return True

    async def until(self, predicate: Callable[[Spawned], bool], timeout: float = 20.0) -> bool:
        """`wait_for` for tests on an event loop (an in-process tocsin keeps running)."""
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if time.monotonic() > deadline or (
                self.process.poll() is not None and not self._reading()
            ):
                return predicate(self)
            await asyncio.sleep(0.02)
        return True

    async def line(self, text: str, *, stream: str = "err", timeout: float = 20.0) -> str:
        """`wait_for_line` for tests on an event loop."""
        assert await self.until(lambda s: bool(s.lines_with(text, stream)), timeout), (
            f"no {text!r} within {timeout} s:\n{self.dump()}"
        )
        return self.lines_with(text, stream)[0]

    def lines_with(self, text: str, stream: str = "err") -> list[str]:
        lines = self.err if stream == "err" else self.out
        return [line for line in lines if text in line]

    def _reading(self) -> bool:
        return any(reader.is_alive() for reader in self._readers)

    def wait_for_line(self, text: str, *, stream: str = "err", timeout: float = 20.0) -> str:
        """The first line of `stream` containing `text`; fails the test with the output."""
        assert self.wait_for(lambda s: bool(s.lines_with(text, stream)), timeout), (
            f"no {text!r} within {timeout} s:\n{self.dump()}"
        )
        return self.lines_with(text, stream)[0]

    def finish(self, timeout: float = 20.0) -> int:
        """Wait for the process to exit by itself and its output to be read."""
        code = self.process.wait(timeout)
        for reader in self._readers:
            reader.join(timeout)
        return code

    def interrupt(self, timeout: float = 10.0) -> int:
        """Ctrl-C, then the exit status once the process has gone."""
        self.process.send_signal(signal.SIGINT)
        return self.finish(timeout)

    def dump(self) -> str:
        return "stdout:\n" + "\n".join(self.out) + "\nstderr:\n" + "\n".join(self.err)


@contextlib.contextmanager
def spawn(
    argv: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None
) -> Iterator[Spawned]:
    process = subprocess.Popen(
        argv,
        env=os.environ | (env or {}),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: ended whole, children too
    )
    try:
        yield Spawned(process)
    finally:
        end(process)


def end(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def group_alive(pid: int) -> bool:
    """Whether any process of the group that `pid` led is still running."""
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    return True


@contextlib.contextmanager
def serving(database: Path, **env: str) -> Iterator[tuple[Spawned, str]]:
    """`tocsin serve` on a SQLite file and a free port, ready; the base URL with it.

    Targets may be on loopback; the first administrator's token is tests.conftest's
    ADMIN_TOKEN. Keyword arguments are more TOCSIN_* variables.
    """
    from tests.conftest import ADMIN_TOKEN  # noqa: PLC0415 - conftest imports pytest plugins

    port = free_port()
    settings = {
        "TOCSIN_DATABASE_URL": f"sqlite:///{database}",
        "TOCSIN_PORT": str(port),
        "TOCSIN_ADMIN_TOKEN": ADMIN_TOKEN,
        "TOCSIN_ALLOWED_NETWORKS": "127.0.0.0/8",
        "TOCSIN_SQLITE_SYNCHRONOUS": "NORMAL",
    }
    with spawn([TOCSIN, "serve"], env=settings | env) as server:
        url = f"http://127.0.0.1:{port}"
        wait_ready(server, url)
        yield server, url


def wait_ready(server: Spawned, url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert server.process.poll() is None, f"tocsin serve exited:\n{server.dump()}"
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return
        time.sleep(0.05)
    raise AssertionError(f"tocsin serve was not ready within 30 s:\n{server.dump()}")
