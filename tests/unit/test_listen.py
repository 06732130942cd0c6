"""`tocsin listen`'s decisions: what it answers, what it prints, which secrets it takes."""

from __future__ import annotations

import time

import orjson
from click.testing import CliRunner

from tocsin.cli import main
from tocsin.delivery import signing
from tocsin.receiver import Received
from tocsin.tools.examine import verifiers
from tocsin.tools.listen import Attempts, Behaviour, Listener, Seen, as_json, describe

SECRET = "whsec_" + "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlYw=="
OTHER = "whsec_" + "b3RoZXItb3RoZXItb3RoZXItb3RoZXItb3RoZXItb3Q="


def signed(
    body: bytes, secret: str, *, webhook_id: str = "msg_1", ndjson: bool = False
) -> Received:
    now = int(time.time())
    return Received(
        method="POST",
        path="/hook",
        headers={
            "Content-Type": "application/x-ndjson" if ndjson else "application/json",
            "webhook-id": webhook_id,
            "webhook-timestamp": str(now),
            "webhook-signature": signing.sign(secret, webhook_id, now, body),
        },
        body=body,
        at=now,
    )


def examine(listener: Listener, received: Received) -> Seen:
    shown: list[Seen] = []
    listener._show = shown.append
    reply = listener(0, received)
    assert reply.status == shown[0].status
    return shown[0]


def test_fail_first_fails_each_webhook_id_its_first_n_times() -> None:
    listener = Listener(Behaviour(fail_first=2, status=202), (), lambda _: None)
    statuses = [
        listener(0, signed(b"[]", SECRET, webhook_id=webhook_id)).status
        for webhook_id in ("msg_a", "msg_a", "msg_b", "msg_a", "msg_b", "msg_b")
    ]
    assert statuses == [500, 500, 500, 202, 500, 202]


def test_attempts_forget_the_oldest_webhook_id_past_capacity() -> None:
    attempts = Attempts(capacity=2)
    assert [attempts.count(i) for i in ("a", "b", "a", "c", "b")] == [1, 1, 2, 1, 1]


def test_a_request_verifies_under_either_secret_of_a_rotation() -> None:
    listener = Listener(Behaviour(), (), lambda _: None)
    listener._checks = verifiers((OTHER, SECRET))
    assert examine(listener, signed(b"[]", SECRET)).signature.verdict == "ok"
    listener._checks = verifiers((OTHER,))
    seen = examine(listener, signed(b"[]", SECRET))
    assert seen.signature.verdict == "invalid"
    assert seen.signature.reason == "No matching signature found"


def test_the_text_line_says_attempt_answer_signature_and_summaries() -> None:
    listener = Listener(Behaviour(fail_first=1), verifiers((SECRET,)), lambda _: None)
    body = b'{"summary": "[Wallarm] New hit detected"}\n{"summary": "[Wallarm] New hit detected"}\n'
    text = describe(examine(listener, signed(body, SECRET, ndjson=True)))
    first, *summaries = text.split("\n")
    assert first.endswith(
        "POST /hook webhook-id=msg_1 attempt 1 -> 500 (--fail-first); signature ok; "
        "2 notifications (ndjson)"
    )
    assert summaries == ["  [Wallarm] New hit detected"] * 2


def test_json_output_carries_the_notifications_whole() -> None:
    listener = Listener(Behaviour(status=503), (), lambda _: None)
    record = orjson.loads(as_json(examine(listener, signed(b'[{"summary": "s", "x": 1}]', SECRET))))
    assert record["status"] == 503
    assert record["signature"] == "unchecked"
    assert record["notifications"] == [{"summary": "s", "x": 1}]


def test_a_body_that_is_not_json_is_said_so() -> None:
    listener = Listener(Behaviour(), (), lambda _: None)
    text = describe(examine(listener, signed(b"<xml/>", SECRET)))
    assert text.endswith("; body is neither a JSON array nor NDJSON")


def test_a_secret_that_is_not_an_integrations_is_one_line() -> None:
    for secret, message in (
        ("s3cret", "--secret: a signing secret starts with whsec_"),
        ("whsec_***", "is not base64 after whsec_"),
    ):
        result = CliRunner().invoke(main, ["listen", "--secret", secret])
        assert result.exit_code == 2
        assert message in result.output
        assert len(result.output.strip().splitlines()) == 1
