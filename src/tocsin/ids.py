"""Random identifiers and secrets."""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Callable


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


def hit_ids(client_id: int) -> Callable[[], list[str]]:
    """Ids for the hits of one request that came without one: one random draw per request."""
    batch = f"{secrets.token_hex(6)}{{:04x}}"
    counter = itertools.count()
    prefix = f"hits_tocsin_{client_id}"
    return lambda: [prefix, batch.format(next(counter))]
