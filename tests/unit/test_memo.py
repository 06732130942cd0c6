"""The bounded memo behind decrypted secrets and decoded integrations."""

from __future__ import annotations

from tocsin.memo import Memo


def test_a_value_is_made_once_per_key_and_all_forgotten_when_full() -> None:
    made: list[str] = []

    def make(key: str) -> str:
        made.append(key)
        return key.upper()

    memo: Memo[str, str] = Memo(capacity=2)
    assert memo.get("a", lambda: make("a")) == "A"
    assert memo.get("a", lambda: make("a")) == "A"
    assert memo.get("b", lambda: make("b")) == "B"
    assert made == ["a", "b"]  # "a" came from memory the second time

    assert memo.get("c", lambda: make("c")) == "C"  # full: starts afresh with "c"
    assert memo.get("c", lambda: make("c")) == "C"
    assert memo.get("a", lambda: make("a")) == "A"  # forgotten, so made again
    assert made == ["a", "b", "c", "a"]
