"""Signed deliveries, secrets at rest, and the target guard at delivery time."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from tests.conftest import ADMIN_TOKEN, MakeReceiver, Running, StartTocsin, hit
from tocsin.crypto import Vault, open_vault
from tocsin.delivery import Sender
from tocsin.models import WebhookSettings
from tocsin.receiver import Receiver
from tocsin.store import Bootstrap
from tocsin.store.sqlite import SqliteStore


def verify(secret: str, request: object) -> object:
    return Webhook(secret).verify(request.body, request.headers)  # type: ignore[attr-defined]


async def test_every_delivery_verifies_with_standardwebhooks_before_and_during_rotation(
    tocsin: Running, receiver: Receiver, ca_pem: str
) -> None:
    created = await tocsin.create_integration(receiver.url, ca_certificate=ca_pem, events=["hit"])
    old_secret = created["signing_secret"]
    await tocsin.report_hits([hit(path="/before")])
    assert await receiver.until(lambda r: r.count >= 1)
    assert verify(old_secret, receiver.requests[0])
    assert len(receiver.requests[0].headers["webhook-signature"].split()) == 1

    response = await tocsin.api.post(f"/api/v1/integrations/{created['id']}/rotate-secret")
    assert response.status_code == 200
    new_secret = response.json()["signing_secret"]
    assert new_secret.startswith("whsec_")
    assert new_secret != old_secret

    await tocsin.report_hits([hit(path="/during")])
    assert await receiver.until(lambda r: r.count >= 2)
    during = receiver.requests[1]
    assert len(during.headers["webhook-signature"].split()) == 2
    assert verify(new_secret, during)
    assert verify(old_secret, during)  # receivers not yet switched keep working for 24 h
    with pytest.raises(WebhookVerificationError):
        verify("whsec_" + "A" * 43 + "=", during)


async def test_secrets_are_not_stored_in_clear(
    tocsin: Running, receiver: Receiver, ca_pem: str
) -> None:
    header_secret = "Bearer receiver-password-4f1d9c"
    created = await tocsin.create_integration(
        receiver.url,
        ca_certificate=ca_pem,
        headers={"Authorization": header_secret},
        events=["hit"],
    )
    await tocsin.api.post(f"/api/v1/integrations/{created['id']}/rotate-secret")
    await tocsin.report_hits([hit()])
    assert await receiver.until(lambda r: r.count >= 1)
    assert receiver.requests[0].headers["Authorization"] == header_secret

    dump = await tocsin.dump()  # SQLite: the database and its WAL; PostgreSQL: every row
    assert dump
    for secret in (header_secret, created["signing_secret"], ADMIN_TOKEN):
        assert secret.encode() not in dump
        assert secret.removeprefix("whsec_").encode() not in dump


def test_a_key_file_is_made_beside_the_database_readable_by_its_owner_only(tmp_path: Path) -> None:
    vault = open_vault(None, f"sqlite:///{tmp_path / 'tocsin.db'}")
    key_file = tmp_path / "tocsin.db.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert vault.decrypt(vault.encrypt("x")) == "x"
    again = open_vault(None, f"sqlite:///{tmp_path / 'tocsin.db'}")
    assert again.decrypt(vault.encrypt("same key")) == "same key"


async def test_key_rotation_re_encrypts_secrets_and_old_tokens_still_work(tmp_path: Path) -> None:
    old, new = Vault.generate_key(), Vault.generate_key()
    path = tmp_path / "rotate.db"
    first = SqliteStore(path, vault=Vault([old]), synchronous="NORMAL")
    await first.migrate()
    boot = Bootstrap(
        client_name="C",
        cloud="EU",
        console_url="https://c.example",
        admin_email="a@example.com",
        admin_name="A",
        token_hash=Vault([old]).token_digest("tcs_admin"),
    )
    await first.bootstrap(boot, 0)
    settings = WebhookSettings(name="n", url="https://r.example/", headers={"X-Key": "k-123"})
    made = await first.create_integration(1, settings, "whsec_" + "B" * 43 + "=", 0)
    await first.close()

    both = Vault([new, old])
    during = SqliteStore(path, vault=both, synchronous="NORMAL")
    assert await during.reencrypt() == 1
    assert await during.principal(both.token_digests("tcs_admin"), 1) is not None
    await during.close()

    after = SqliteStore(path, vault=Vault([new]), synchronous="NORMAL")
    found = await after.get_integration(1, made.id)
    await after.close()
    assert found is not None
    assert found.settings.headers == {"X-Key": "k-123"}
    assert found.signing_secret == made.signing_secret


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "127.1"])
async def test_delivery_to_a_refused_address_never_connects(
    make_receiver: MakeReceiver, ca_pem: str, host: str
) -> None:
    receiver = make_receiver()
    sender = Sender(allowed_networks=())
    settings = WebhookSettings(
        name="n",
        url=f"https://{host}:{receiver.port}/hook",
        ca_certificate=ca_pem,
        request_timeout=2,
    )
    try:
        outcome = await sender.send(
            settings, secrets=["whsec_" + "C" * 43 + "="], webhook_id="msg_1", body=b"[]"
        )
    finally:
        await sender.close()
    assert not outcome.ok
    assert outcome.error is not None
    assert "target refused" in outcome.error
    assert "loopback" in outcome.error
    assert receiver.count == 0


async def test_creation_refuses_metadata_and_loopback_names(start_tocsin: StartTocsin) -> None:
    tocsin = await start_tocsin(allowed_networks=())
    for url in (
        "https://169.254.169.254/latest/meta-data/",
        "https://localhost/hook",
        "https://127.1/",
    ):
        response = await tocsin.api.post("/api/v1/integrations", json={"name": "x", "url": url})
        assert response.status_code == 422, url
        assert response.json()["error"]["field"] == "url"
        # 127.1 is refused before any lookup, as an address spelled the unusual way
        assert response.json()["error"]["code"] in ("target_refused", "invalid")
        assert "refused" in response.json()["error"]["message"] or "127.1" in url
