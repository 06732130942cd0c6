"""The golden vectors, copied into the repository (tests/vectors/): every test reads them
from here, so a clone anywhere runs them; a missing vector fails its test."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

VECTORS = Path(__file__).resolve().parent / "vectors"
NAMES = ("hit.json", "vuln.json", "test_message.json", "ip_blocked.json")


def vector(name: str) -> dict[str, Any]:
    """One vector: `about`, `settings`, `input`, `expected` (FileNotFoundError if missing)."""
    data: dict[str, Any] = json.loads((VECTORS / name).read_text())
    return data
