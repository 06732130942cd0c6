"""Events read from a file or standard input for `tocsin report`: NDJSON or one JSON array.

Each event keeps where it came from (`line 17`, or `item 17` of an array), so a refusal
by the server can name the line to fix, and its bytes, so batches are sent as read.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import orjson

from tocsin.errors import TocsinError


class InputError(TocsinError):
    """A line (or an item of the array) that is not an event."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where
        self.message = message


@dataclass(frozen=True, slots=True, kw_only=True)
class Item:
    """One event: where it was, its JSON bytes, and how far into the input it ends."""

    where: str
    number: int
    raw: bytes
    progress: int  # bytes (NDJSON) or items (array) read up to its end


@dataclass(frozen=True, slots=True, kw_only=True)
class Source:
    """The events of one input, read lazily, and what progress counts them in."""

    items: Iterator[Item]
    total: int | None  # bytes or items; None when unknown (a pipe)
    unit: str  # "bytes" or "items"


def read(stream: BinaryIO, size: int | None) -> Source:
    """NDJSON (one event per line, blank lines skipped) unless the input opens with `[`."""
    head = _head(stream)
    if head and head[-1].lstrip().startswith(b"["):
        items = _array(b"".join(head) + stream.read())
        return Source(items=iter(items), total=len(items), unit="items")
    return Source(items=_lines(itertools.chain(head, stream)), total=size, unit="bytes")


def _head(stream: BinaryIO) -> list[bytes]:
    """The lines up to the first that is not blank."""
    lines = []
    for line in iter(stream.readline, b""):
        lines.append(line)
        if line.strip():
            break
    return lines


def _lines(lines: Iterator[bytes]) -> Iterator[Item]:
    offset = 0
    for number, line in enumerate(lines, start=1):
        offset += len(line)
        text = line.strip()
        if text:
            where = f"line {number}"
            yield Item(where=where, number=number, raw=_event(where, text), progress=offset)


def _event(where: str, text: bytes) -> bytes:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InputError(where, f"not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise InputError(where, f"an event is a JSON object, not {_kind(value)}")
    return text


def _array(document: bytes) -> list[Item]:
    try:
        values = orjson.loads(document)
    except orjson.JSONDecodeError as exc:
        raise InputError(
            f"line {exc.lineno}", f"the JSON array does not parse ({exc.msg})"
        ) from None
    if not isinstance(values, list):
        raise InputError("line 1", "the input is neither NDJSON nor a JSON array")
    items = []
    for index, value in enumerate(values, start=1):
        if not isinstance(value, dict):
            raise InputError(f"item {index}", f"an event is a JSON object, not {_kind(value)}")
        items.append(
            Item(where=f"item {index}", number=index, raw=orjson.dumps(value), progress=index)
        )
    return items


def _kind(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"
