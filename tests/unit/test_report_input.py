"""`tocsin report`'s reading and batching: where each event came from, what goes together."""

from __future__ import annotations

import io

import pytest

from tocsin.tools.report import Answer, backoff, batches, refused_index, wait_for
from tocsin.tools.source import InputError, read


def events(text: bytes) -> list[tuple[str, bytes]]:
    return [(item.where, item.raw) for item in read(io.BytesIO(text), None).items]


def test_ndjson_keeps_line_numbers_across_blank_lines() -> None:
    assert events(b'\n{"a": 1}\n\n  {"b": 2}  \n{"c":3}') == [
        ("line 2", b'{"a": 1}'),
        ("line 4", b'{"b": 2}'),
        ("line 5", b'{"c":3}'),
    ]


def test_a_json_array_is_numbered_by_item() -> None:
    source = read(io.BytesIO(b'\n  [\n {"a": 1},\n {"b": 2}\n]\n'), None)
    assert source.unit == "items"
    assert source.total == 2
    assert [(item.where, item.raw) for item in source.items] == [
        ("item 1", b'{"a":1}'),
        ("item 2", b'{"b":2}'),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b'{"a": 1}\n{"a": \n', "line 2: not JSON ("),
        (b'{"a": 1}\n[1, 2]\n', "line 2: an event is a JSON object, not an array"),
        (b'{"a": 1}\n"text"\n', "line 2: an event is a JSON object, not a string"),
        (b'[{"a": 1}, 7]', "item 2: an event is a JSON object, not a number"),
        (b'[{"a": 1},\n {"a": }]', "line 2: the JSON array does not parse"),
    ],
)
def test_what_is_not_an_event_is_named_by_its_line(text: bytes, message: str) -> None:
    with pytest.raises(InputError) as caught:
        events(text)
    assert str(caught.value).startswith(message)


def test_batches_hold_at_most_size_events_and_max_bytes() -> None:
    items = read(io.BytesIO(b"".join(b'{"n": %d}\n' % n for n in range(10))), None).items
    sizes = [len(batch) for batch in batches(items, size=4)]
    assert sizes == [4, 4, 2]
    items = read(io.BytesIO(b"".join(b'{"n": %d}\n' % n for n in range(10))), None).items
    assert [len(b) for b in batches(items, size=100, max_bytes=30)] == [3, 3, 3, 1]


def test_the_events_before_a_bad_line_are_still_batched() -> None:
    items = read(io.BytesIO(b'{"n": 1}\n{"n": 2}\nnope\n{"n": 4}\n'), None).items
    produced = batches(items, size=100)
    assert [item.where for item in next(produced)] == ["line 1", "line 2"]
    with pytest.raises(InputError, match="line 3"):
        next(produced)


def test_the_refused_field_names_the_event_of_the_batch() -> None:
    assert refused_index("[3].request_time") == (3, "request_time")
    assert refused_index("[0]") == (0, None)
    assert refused_index("hosts.added[0]") == (None, "hosts.added[0]")
    assert refused_index(None) == (None, None)


def test_retries_wait_longer_each_time_and_follow_retry_after() -> None:
    waits = [backoff(n) for n in range(1, 10)]
    assert all(0.4 <= w <= 30 for w in waits)
    assert waits[3] > waits[0]
    assert backoff(20) <= 30
    assert wait_for(Answer(status=429, payload=None, retry_after="7"), 1) == 7
    assert wait_for(Answer(status=503, payload=None, retry_after="soon"), 1) <= 0.5
