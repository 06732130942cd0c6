"""Webhook message ids: Standard Webhooks' `msg_` form, random, and never handed out twice."""

from __future__ import annotations

import os
import re
import threading

import pytest

from tocsin import ids

WEBHOOK_ID = re.compile(r"msg_[A-Za-z0-9_-]{24}")


def test_webhook_ids_have_the_form_token_urlsafe_gave_them() -> None:
    # More than one draw's worth, so ids from either side of a refill are checked.
    made = [ids.webhook_id() for _ in range(1000)]
    assert all(WEBHOOK_ID.fullmatch(made_id) for made_id in made), made[:3]
    assert len(set(made)) == len(made)


def test_threads_never_share_an_id() -> None:
    made: list[list[str]] = [[] for _ in range(8)]

    def draw(into: list[str]) -> None:
        into.extend(ids.webhook_id() for _ in range(5000))

    threads = [threading.Thread(target=draw, args=(into,)) for into in made]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [made_id for into in made for made_id in into]
    assert len(every) == 8 * 5000
    assert len(set(every)) == len(every)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    ids.webhook_id()  # the parent holds ids drawn ahead
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its first ids and leave without pytest's teardown
        os.close(reader)
        os.write(writer, " ".join(ids.webhook_id() for _ in range(3)).encode())
        os._exit(0)
    os.close(writer)
    with os.fdopen(reader) as pipe:
        child = pipe.read().split()
    os.waitpid(pid, 0)
    parent = [ids.webhook_id() for _ in range(3)]
    assert len(child) == 3
    assert not set(child) & set(parent)
