"""Real `tocsin serve` subprocesses on loopback for the tests that need a whole process: started
on a free port, waited for, and always stopped (SIGTERM, then SIGKILL) afterwards."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

TOCSIN = Path(sys.executable).with_name("tocsin")
READY_WITHIN = 30.0  # seconds; a bound for a stuck start, not a timing


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Served:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text()

    def rss_kib(self) -> int:
        """The process's resident memory now, from /proc."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS line")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()  # no-op once gone; SIGTERM is the orderly stop
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@contextlib.contextmanager
def serve(
    directory: Path, env: dict[str, str] | None = None, *, wait: bool = True
) -> Iterator[Served]:
    """`tocsin serve` in `directory` (its default ./tocsin.db there) on a free port."""
    port = free_port()
    environment = {key: value for key, value in os.environ.items() if not key.startswith("TOCSIN_")}
    environment |= {"TOCSIN_PORT": str(port)} | (env or {})
    log = directory / "serve.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [TOCSIN, "serve"], cwd=directory, env=environment, stdout=output, stderr=output
        )
    served = Served(process, int(environment["TOCSIN_PORT"]), log)
    try:
        if wait:
            wait_ready(served)
        yield served
    finally:
        stop(process)


def wait_ready(served: Served) -> None:
    deadline = time.monotonic() + READY_WITHIN
    while time.monotonic() < deadline:
        if served.process.poll() is not None:
            raise AssertionError(f"tocsin serve exited:\n{served.output()}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{served.url}/readyz", timeout=5).status_code == 200:
                return
        time.sleep(0.05)
    raise AssertionError(f"tocsin serve was not ready in {READY_WITHIN:g} s:\n{served.output()}")
