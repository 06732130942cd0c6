"""Random identifiers and secrets."""

from __future__ import annotations

import base64
import collections
import itertools
import os
import secrets
from collections.abc import Callable

_ID_BYTES = 18  # 24 URL-safe base64 characters; a multiple of 3, so no padding
_IDS_PER_DRAW = 64
_webhook_ids: collections.deque[str] = collections.deque()
if hasattr(os, "register_at_fork"):  # a forked child must not hand out its parent's ids
    os.register_at_fork(after_in_child=_webhook_ids.clear)


def webhook_id() -> str:
    """A delivery's Standard Webhooks message id, stable across its retries.

    `msg_` and 18 random bytes in URL-safe base64, as `secrets.token_urlsafe(18)` makes
    them, drawn 64 ids at a time: one os.urandom call per id cost more than the rest.
    The deque's popleft is atomic, so threads (the SQLite store's) never share an id.
    """
    while True:
        try:
            return _webhook_ids.popleft()
        except IndexError:
            _webhook_ids.extend(_draw_webhook_ids())


def _draw_webhook_ids() -> list[str]:
    text = base64.urlsafe_b64encode(os.urandom(_ID_BYTES * _IDS_PER_DRAW)).decode("ascii")
    size = _ID_BYTES * 4 // 3
    return [f"msg_{text[start : start + size]}" for start in range(0, len(text), size)]


def signing_secret() -> str:
    """A new Standard Webhooks signing secret (`whsec_` + base64 of 32 random bytes)."""
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
