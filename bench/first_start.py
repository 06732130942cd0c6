"""Seconds from a fresh clone to `GET /readyz` answering 200, with an empty pip cache.

    .venv/bin/python bench/first_start.py [REV ...]

Each revision (default HEAD) is cloned into a new temporary directory and started with
`make serve` on a free loopback port, pip using a new, empty cache directory, exactly as
a new user's first `make serve` would run; the clock stops when /readyz answers 200.
The figures are written in docs/operations.md ("The first start").
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LIMIT = 600.0  # seconds


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


def first_start(rev: str) -> float:
    with tempfile.TemporaryDirectory(prefix="tocsin-first-start-") as tmp:
        clone = Path(tmp) / "tocsin"
        subprocess.run(
            ["git", "clone", "-q", "--no-checkout", str(REPO), str(clone)],
            check=True,
        )
        subprocess.run(["git", "-C", str(clone), "checkout", "-q", rev], check=True)
        port = free_port()
        env = {
            **os.environ,
            "PIP_CACHE_DIR": str(Path(tmp) / "pip-cache"),  # empty: nothing cached
            "TOCSIN_PORT": str(port),
            "TOCSIN_ADMIN_TOKEN": "first-start",
        }
        env.pop("VIRTUAL_ENV", None)
        started = time.monotonic()
        process = subprocess.Popen(
            ["make", "serve"],
            cwd=clone,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            while not ready(port):
                if process.poll() is not None or time.monotonic() - started > LIMIT:
                    raise SystemExit(f"{rev}: make serve stopped or never became ready")
                time.sleep(0.1)
            return time.monotonic() - started
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait()


def main() -> None:
    for rev in sys.argv[1:] or ["HEAD"]:
        seconds = first_start(rev)
        print(f"{rev}: fresh clone -> /readyz in {seconds:.1f} s")


if __name__ == "__main__":
    main()
