"""`tocsin demo` as a newcomer runs it: deliveries shown within 15 s, Ctrl-C leaves nothing."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.processes import TOCSIN, Spawned, group_alive, spawn

pytestmark = pytest.mark.slow


def told(demo: Spawned, label: str) -> str:
    line = demo.wait_for_line(label, timeout=15)
    return line.split(label, 1)[1].strip()


def test_demo_shows_deliveries_and_ctrl_c_leaves_no_process_or_file() -> None:
    with spawn([TOCSIN, "demo"]) as demo:
        retried = demo.wait_for_line("attempt 2 -> 200", stream="out", timeout=15)
        assert demo.wait_for_line("failed on purpose", stream="out", timeout=15)
        assert demo.wait_for_line("New vulnerability detected: SQL injection", stream="out")
        console = told(demo, "console:").split()[0]
        token = told(demo, "admin token:")
        workdir = Path(
            re.sub(
                r"^temporary files in (.*): removed on Ctrl-C$",
                r"\1",
                demo.wait_for_line("temporary files in"),
            )
        )
        assert workdir.is_dir()
        deliveries = httpx.get(
            f"{console}api/v1/integrations/1/deliveries",
            headers={"Authorization": f"Bearer {token}"},
        ).json()["items"]
        pid = demo.process.pid

        assert demo.interrupt(timeout=5) == 0

    assert "signature ok" in retried
    assert "8 notifications" in retried  # 3 attacks and 5 of the 8 identical hits
    hits = [line for line in demo.out if "New hit detected" in line]
    assert len(hits) == 16  # the 8 notifications, on both attempts
    assert sorted(d["attempts_count"] for d in deliveries) == [1, 2]
    assert not workdir.exists()
    assert not group_alive(pid)
    assert "Traceback" not in "\n".join(demo.err)


def test_demo_json_prints_one_object_per_delivery() -> None:
    with spawn([TOCSIN, "demo", "--json"]) as demo:
        assert demo.wait_for(lambda d: len(d.out) >= 3, timeout=15), demo.dump()
        assert demo.interrupt(timeout=5) == 0
    records = [json.loads(line) for line in demo.out]
    assert {r["signature"] for r in records} == {"ok"}
    assert sorted((r["attempt"], r["status"]) for r in records) == [(1, 200), (1, 500), (2, 200)]
    retried = [r for r in records if r["failed_on_purpose"]]
    assert len(retried) == 1
    kinds = {n["details"]["notification_type"] for r in records for n in r["notifications"]}
    assert kinds == {"new_hits", "vuln"}


def test_demo_on_a_busy_port_is_one_line() -> None:
    with spawn([TOCSIN, "listen", "--port", "0"]) as listener:
        port = listener.wait_for_line("listening on").split(":")[2].split("/")[0]
        result = subprocess.run(
            [TOCSIN, "demo", "--port", port],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"tocsin: cannot listen on 127.0.0.1:{port}: Address already in use"
    )
