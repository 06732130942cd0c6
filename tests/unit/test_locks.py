"""The two lock files: requirements.lock is exactly what tocsin needs at run time (what
`make serve` installs), requirements-dev.lock exactly what development adds."""

from __future__ import annotations

import re
import subprocess
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path: Path) -> set[str]:
    lines = path.read_text().splitlines()
    return {canonical(line.split("==")[0]) for line in lines if "==" in line}


def closure(name: str, extras: frozenset[str] = frozenset()) -> set[str]:
    """Every distribution `name[extras]` pulls in, as installed in this environment."""
    seen: set[str] = set()
    todo = [(name, extras)]
    while todo:
        current, wanted = todo.pop()
        for text in metadata.requires(current) or []:
            requirement = Requirement(text)
            marker = requirement.marker
            if marker is not None and not any(
                marker.evaluate({"extra": extra}) for extra in (wanted or {""})
            ):
                continue
            dependency = canonical(requirement.name)
            if dependency not in seen:
                seen.add(dependency)
                todo.append((dependency, frozenset(requirement.extras)))
    return seen


def test_the_runtime_lock_holds_what_tocsin_needs_and_nothing_else() -> None:
    assert pins(ROOT / "requirements.lock") == closure("tocsin")


def test_the_dev_lock_holds_what_development_adds() -> None:
    runtime = pins(ROOT / "requirements.lock")
    dev = closure("tocsin", frozenset({"dev"})) - runtime
    assert pins(ROOT / "requirements-dev.lock") >= dev
    assert not pins(ROOT / "requirements-dev.lock") & runtime  # each pin in one file


def test_make_serve_installs_the_runtime_lock_only() -> None:
    plan = subprocess.run(
        ["make", "-n", "-B", "serve"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert "requirements.lock" in plan
    assert "requirements-dev.lock" not in plan
    assert "tocsin serve" in plan
