"""Loads the named SQL statements of `sql/<dialect>.sql`."""

from __future__ import annotations

import re
from importlib import resources

_HEADER = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def load(dialect: str) -> dict[str, str]:
    """Statement name -> SQL text."""
    text = resources.files("tocsin.store").joinpath("sql", f"{dialect}.sql").read_text()
    parts = _HEADER.split(text)
    # split() gives the preamble, then each name followed by its body.
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def migrations(dialect: str) -> list[tuple[int, str]]:
    """(version, SQL script) in version order, from `migrations/<dialect>/NNNN_*.sql`."""
    folder = resources.files("tocsin.store").joinpath("migrations", dialect)
    return sorted(
        (int(entry.name.split("_", 1)[0]), entry.read_text())
        for entry in folder.iterdir()
        if entry.name.endswith(".sql")
    )
