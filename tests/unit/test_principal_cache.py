"""PrincipalCache: a token's holder is remembered briefly, never past the token's expiry."""

from __future__ import annotations

from tocsin.models import Client, Principal, Role
from tocsin.service import PrincipalCache

CLIENT = Client(id=1, name="Acme", cloud="EU", console_url="https://c.test")
T0 = 1_700_000_000.0


def principal(expires_at: float | None = None) -> Principal:
    return Principal(
        client=CLIENT,
        user_id=1,
        email="a@acme.test",
        role=Role.ANALYST,
        token_expires_at=expires_at,
    )


def test_remembered_for_ttl_then_forgotten() -> None:
    cache = PrincipalCache(ttl=1.0)
    cache.put("d", principal(), T0)
    assert cache.get("d", T0 + 0.5) == principal()
    assert cache.get("d", T0 + 1.0) is None
    assert cache.get("other", T0) is None


def test_never_past_the_tokens_expiry() -> None:
    cache = PrincipalCache(ttl=10.0)
    cache.put("d", principal(expires_at=T0 + 2), T0)
    assert cache.get("d", T0 + 1.999) is not None
    assert cache.get("d", T0 + 2) is None


def test_a_clock_moved_back_does_not_stretch_the_ttl() -> None:
    cache = PrincipalCache(ttl=1.0)
    cache.put("d", principal(), T0)
    assert cache.get("d", T0 - 5) is None


def test_clear_and_capacity() -> None:
    cache = PrincipalCache(ttl=60.0, capacity=2)
    cache.put("a", principal(), T0)
    cache.clear()
    assert cache.get("a", T0) is None
    for name in ("a", "b", "c"):
        cache.put(name, principal(), T0)
    assert cache.get("c", T0) is not None
    assert sum(cache.get(name, T0) is not None for name in ("a", "b", "c")) <= 2
