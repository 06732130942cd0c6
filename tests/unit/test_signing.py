"""Standard Webhooks signatures: the published test vector and the headers of a request."""

from __future__ import annotations

import pytest

from tocsin.delivery import sender, signing
from tocsin.models import BodyFormat, Integration, WebhookSettings

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_published_vector() -> None:
    signature = signing.sign(
        SECRET, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}'
    )
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_request_headers_sign_the_exact_body_and_let_users_override_content_type() -> None:
    settings = WebhookSettings(
        name="n",
        url="https://x.example/",
        headers={"content-type": "text/plain", "X-Key": "k"},
        format=BodyFormat.NDJSON,
    )
    headers = sender.request_headers(settings, [SECRET], "msg_1", b"{}\n", 1700000000)
    assert headers["content-type"] == "text/plain"
    assert "Content-Type" not in headers
    assert headers["X-Key"] == "k"
    assert headers["webhook-id"] == "msg_1"
    assert headers["webhook-timestamp"] == "1700000000"
    assert headers["webhook-signature"] == signing.sign(SECRET, "msg_1", 1700000000, b"{}\n")


def test_the_previous_secret_signs_for_24_hours_after_a_rotation() -> None:
    integration = Integration(
        id=1,
        client_id=1,
        settings=WebhookSettings(name="n", url="https://x.example/"),
        signing_secret="whsec_new",
        previous_signing_secret="whsec_old",
        secret_rotated_at=1000.0,
        created_at=0,
        updated_at=0,
    )
    assert integration.signing_secrets(1000.0 + 86399) == ["whsec_new", "whsec_old"]
    assert integration.signing_secrets(1000.0 + 86400) == ["whsec_new"]


def test_users_cannot_shadow_the_signature_headers_in_another_case() -> None:
    settings = WebhookSettings(
        name="n",
        url="https://x.example/",
        headers={"Webhook-Signature": "v1,forged", "X-A": "1", "x-a": "2"},
    )
    headers = sender.request_headers(settings, [SECRET], "msg_1", b"[]", 1700000000)
    lowered = [name.lower() for name in headers]
    assert len(lowered) == len(set(lowered))
    assert headers["webhook-signature"] == signing.sign(SECRET, "msg_1", 1700000000, b"[]")
    assert headers["x-a"] == "2"


async def test_a_broken_secret_is_a_recorded_failure_not_an_escaped_exception() -> None:
    broken = sender.Sender()
    try:
        outcome = await broken.send(
            WebhookSettings(name="n", url="https://192.0.2.1/"),
            secrets=["whsec_not-base64!"],
            webhook_id="msg_1",
            body=b"[]",
        )
    finally:
        await broken.close()
    assert not outcome.ok
    assert outcome.error


def test_signatures_stay_right_when_a_secret_signs_again_and_again() -> None:
    # The keyed HMAC is remembered per secret; no signature may leave its data in it.
    other = "whsec_" + "A" * 43 + "="
    for _ in range(3):
        assert signing.sign(
            SECRET, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}'
        ) == ("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        assert signing.sign(other, "msg_1", 1, b"") == signing.sign(other, "msg_1", 1, b"")
    assert signing.sign(other, "msg_1", 1, b"") != signing.sign(SECRET, "msg_1", 1, b"")


def test_a_broken_secret_fails_every_time() -> None:
    for _ in range(2):
        with pytest.raises(ValueError, match="Invalid base64-encoded string"):
            signing.sign("whsec_not-base64!", "msg_1", 1, b"[]")
