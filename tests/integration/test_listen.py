"""`tocsin listen` as a real process: a real integration retries against it and succeeds."""

from __future__ import annotations

import json

import pytest

from tests.conftest import Running, StartTocsin, hit
from tests.processes import TOCSIN, Spawned, free_port, spawn


async def ca_printed(listener: Spawned) -> str:
    """The PEM `listen --tls` printed on standard error."""
    await listener.line("listening on https://")
    start = listener.err.index("-----BEGIN CERTIFICATE-----")
    end = listener.err.index("-----END CERTIFICATE-----")
    return "\n".join(listener.err[start : end + 1]) + "\n"


async def requests_printed(listener: Spawned, count: int) -> list[dict[str, object]]:
    assert await listener.until(lambda s: len(s.out) >= count, timeout=30), listener.dump()
    return [json.loads(line) for line in listener.out]


# The behaviour under test is listen's; one store is enough to deliver to it.
@pytest.mark.parametrize("store_kind", ["sqlite"])
async def test_fail_first_2_makes_a_delivery_succeed_on_its_third_attempt(
    tocsin: Running,
) -> None:
    port = free_port()
    created = await tocsin.create_integration(f"https://127.0.0.1:{port}/hook", events=["hit"])
    secret = created["signing_secret"]
    argv = [TOCSIN, "listen", "--port", str(port), "--tls", "--fail-first", "2", "--json"]
    with spawn([*argv, "--secret", secret]) as listener:
        patched = await tocsin.api.patch(
            f"/api/v1/integrations/{created['id']}",
            json={"ca_certificate": await ca_printed(listener)},
        )
        assert patched.status_code == 200, patched.text
        await tocsin.report_hits([hit(path="/retried")])

        printed = await requests_printed(listener, 3)
        assert listener.interrupt() == 0

    assert [(r["attempt"], r["status"], r["signature"]) for r in printed] == [
        (1, 500, "ok"),
        (2, 500, "ok"),
        (3, 200, "ok"),
    ]
    assert len({r["webhook_id"] for r in printed}) == 1
    assert printed[2]["notifications"][0]["details"]["hit"]["path"] == "/retried"  # type: ignore[index]
    log = await tocsin.api.get(f"/api/v1/integrations/{created['id']}/deliveries")
    (delivery,) = log.json()["items"]
    assert delivery["status"] == "delivered"
    assert delivery["webhook_id"] == printed[0]["webhook_id"]
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 500, 200]


@pytest.mark.parametrize("store_kind", ["sqlite"])
async def test_a_wrong_secret_is_reported_per_request_as_invalid(
    start_tocsin: StartTocsin,
) -> None:
    tocsin = await start_tocsin(allow_http=True)
    port = free_port()
    wrong = "whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE="
    with spawn([TOCSIN, "listen", "--port", str(port), "--secret", wrong]) as listener:
        await listener.line("listening on http://")
        created = await tocsin.create_integration(f"http://127.0.0.1:{port}/hook", events=["hit"])
        assert created["url"].startswith("http://")
        await tocsin.report_hits([hit(path="/signed")])
        line = await listener.line("webhook-id=msg_", stream="out")
        summary = await listener.line("New hit detected", stream="out")
        assert listener.interrupt() == 0
    assert "attempt 1 -> 200; signature INVALID: No matching signature found" in line
    assert "1 notification (json_array)" in line
    assert summary == "  [Wallarm] New hit detected: sqli GET shop.example.com/signed from 8.8.8.8"
