"""The first start of a real `tocsin serve` (issue 17): the key file, a busy port, the lines
printed, `--help`. Each start is a subprocess in a fresh directory, as a new user's."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN, Running
from tests.served import TOCSIN, serve

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
EXITED_WITHIN = 60  # seconds; a bound for a hang, not a timing


@contextlib.contextmanager
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TOCSIN_")} | env
    return subprocess.run(
        [TOCSIN, *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=EXITED_WITHIN,
        check=False,
    )


def one_line(text: str) -> str:
    assert "Traceback" not in text, text
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


# --------------------------------------------------------------------------- the key file


def test_git_ignores_the_key_file_beside_the_database(tmp_path: Path) -> None:
    """`make serve` in a checkout makes ./tocsin.db.key: `git add .` must not take it."""
    shutil.copy(ROOT / ".gitignore", tmp_path / ".gitignore")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    for name in ("tocsin.db", "tocsin.db.key", "data/prod.db.key", "tocsin.db-wal"):
        ignored = subprocess.run(
            ["git", "-C", str(tmp_path), "check-ignore", "-q", "--no-index", name], check=False
        )
        assert ignored.returncode == 0, f"{name} is not ignored"


def test_the_first_start_makes_a_key_only_its_owner_reads_and_says_where(tmp_path: Path) -> None:
    previous = os.umask(0)  # the permissive umask of some containers: the mode must hold
    try:
        with serve(tmp_path, {"TOCSIN_ADMIN_TOKEN": ADMIN_TOKEN}) as first:
            pass
    finally:
        os.umask(previous)
    key_file = tmp_path / "tocsin.db.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    said = [line for line in first.output().splitlines() if "key file" in line]
    assert len(said) == 1, first.output()
    assert str(key_file) in said[0]
    assert "back it up with the database" in said[0]
    with serve(tmp_path) as again:
        pass
    assert "key file" not in again.output()  # said once, when it was made
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tocsin")] == []


def test_a_key_file_others_may_read_is_refused_in_one_line(tmp_path: Path) -> None:
    with serve(tmp_path, {"TOCSIN_ADMIN_TOKEN": ADMIN_TOKEN}):
        pass
    key_file = tmp_path / "tocsin.db.key"
    key_file.chmod(0o644)
    result = run(["serve"], tmp_path)
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert f"chmod 600 {key_file}" in line


# --------------------------------------------------------------------------- a busy port


def test_serve_on_a_busy_port_creates_nothing_and_the_next_start_prints_the_token(
    tmp_path: Path,
) -> None:
    with busy_port() as port:
        result = run(["serve"], tmp_path, TOCSIN_PORT=str(port))
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in one_line(result.stderr)
    assert list(tmp_path.iterdir()) == []  # no database, no key, no administrator
    with serve(tmp_path) as served:
        found = re.search(r"API token \(shown once\): (\S+)", served.output())
        assert found, served.output()
        headers = {"Authorization": f"Bearer {found[1]}"}
        assert httpx.get(f"{served.url}/api/v1/integrations", headers=headers).status_code == 200


def test_listen_on_a_busy_port_says_so_in_one_line(tmp_path: Path) -> None:
    with busy_port() as port:
        result = run(["listen", "--port", str(port)], tmp_path)
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in one_line(result.stderr)


# --------------------------------------------------------------------------- small truths


def test_serve_help_says_what_serve_runs_and_the_console_url_default(tmp_path: Path) -> None:
    text = run(["serve", "--help"], tmp_path).stdout
    assert "(later)" not in text
    assert "Run the API" in text
    console = " ".join(text[text.index("--console-url") :].split()[:12])
    assert "http://<host>:<port>" in console
    assert 'default: ""' not in " ".join(text.split())


def test_a_token_given_by_the_operator_is_not_printed(tmp_path: Path) -> None:
    with serve(tmp_path, {"TOCSIN_ADMIN_TOKEN": ADMIN_TOKEN}) as served:
        pass
    assert ADMIN_TOKEN not in served.output()
    assert "shown once" not in served.output()
    assert "TOCSIN_ADMIN_TOKEN" in served.output()


@pytest.mark.parametrize("store_kind", ["sqlite"])  # the message is the schema's, any store
@pytest.mark.parametrize("url", ["ftp://siem.example.com/hook", "http:///no-host"])
async def test_a_bad_url_names_http_where_the_deployment_allows_it(
    start_tocsin: object, url: str
) -> None:
    tocsin: Running = await start_tocsin(allow_http=True)  # type: ignore[operator]
    body = {"name": "siem", "url": url}
    response = await tocsin.api.post("/api/v1/integrations", json=body)
    assert response.status_code == 422, response.text
    message = response.json()["error"]["message"]
    assert "http://" in message.replace("https://", ""), message
