"""What a receiver makes of one request: its notifications and whether its signature holds.

The signature is checked with the `standardwebhooks` package, the Standard Webhooks
reference verifier, not with tocsin's own signing code: what it accepts, any receiver
built on the standard accepts.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
from dataclasses import dataclass
from typing import Any

import orjson
from standardwebhooks import Webhook, WebhookVerificationError

from tocsin.errors import ConfigError
from tocsin.receiver import Received


@dataclass(frozen=True, slots=True, kw_only=True)
class Signature:
    """`ok`, `invalid` (with the verifier's reason) or `unchecked` (no secret given)."""

    verdict: str
    reason: str | None = None


UNCHECKED = Signature(verdict="unchecked")


def verifiers(secrets: tuple[str, ...]) -> tuple[Webhook, ...]:
    """One verifier per `whsec_` secret; a secret that cannot be one is a ConfigError."""
    return tuple(_verifier(secret) for secret in secrets)


def _verifier(secret: str) -> Webhook:
    if not secret.startswith("whsec_"):
        raise ConfigError("--secret: a signing secret starts with whsec_ (the integration's)")
    raw = secret.removeprefix("whsec_")
    try:
        key = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    except binascii.Error:
        key = b""
    if not key:
        raise ConfigError(f"--secret: {secret[:10]}... is not base64 after whsec_")
    return Webhook(key)


def check_signature(received: Received, checks: tuple[Webhook, ...]) -> Signature:
    """`ok` if any of the secrets verifies the request (as during a secret rotation)."""
    if not checks:
        return UNCHECKED
    reason = "no secret verifies it"
    for check in checks:
        try:
            check.verify(received.body, received.headers, json_parse=False)
        except WebhookVerificationError as exc:
            reason = str(exc)
        else:
            return Signature(verdict="ok")
    return Signature(verdict="invalid", reason=reason)


def header(received: Received, name: str) -> str:
    """A request header by name, whatever its case on the wire ("" if absent)."""
    wanted = name.lower()
    return next((value for key, value in received.headers.items() if key.lower() == wanted), "")


def notifications(received: Received) -> list[Any] | None:
    """The notifications of a JSON-array or NDJSON body; None if it is neither."""
    with contextlib.suppress(orjson.JSONDecodeError):
        if body_format(received) == "ndjson":
            return [orjson.loads(line) for line in received.body.split(b"\n") if line.strip()]
        parsed = orjson.loads(received.body)
        return parsed if isinstance(parsed, list) else [parsed]
    return None


def body_format(received: Received) -> str:
    return "ndjson" if "ndjson" in header(received, "Content-Type") else "json_array"


def summaries(items: list[Any] | None) -> list[str]:
    """One line per notification: its summary, and what it is about when tocsin says."""
    if items is None:
        return []
    return [headline(item) for item in items if isinstance(item, dict)]


def headline(item: dict[str, Any]) -> str:
    summary = str(item.get("summary"))
    details = item.get("details")
    if not isinstance(details, dict):
        return summary
    hit, vuln = details.get("hit"), details.get("vuln")
    if isinstance(hit, dict):
        source = hit.get("remote_addr4") or hit.get("remote_addr6")
        where = f"{hit.get('method')} {hit.get('domain')}{hit.get('path')}"
        return f"{summary}: {hit.get('type')} {where} from {source}"
    if isinstance(vuln, dict):
        return f"{summary}: {vuln.get('title')} ({vuln.get('threat')})"
    return summary
