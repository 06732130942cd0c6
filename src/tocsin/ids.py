"""Random identifiers and secrets."""

from __future__ import annotations

import secrets


def webhook_id() -> str:
    """A delivery's Standard Webhooks message id, stable across its retries."""
    return f"msg_{secrets.token_urlsafe(18)}"


def signing_secret() -> str:
    """A new Standard Webhooks signing secret (`whsec_` + base64 of 32 random bytes)."""
    import base64  # noqa: PLC0415 - only needed when an integration is created

    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def api_token() -> str:
    """A new API token, shown once."""
    return f"tcs_{secrets.token_urlsafe(32)}"


def hit_id(client_id: int) -> list[str]:
    """An id for a hit the sensor sent without one: the same two-string shape as Wallarm's."""
    return [f"hits_tocsin_{client_id}", secrets.token_hex(8)]
