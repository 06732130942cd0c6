"""The repository carries its own golden vectors, and no test reads them from outside it."""

from __future__ import annotations

from pathlib import Path

from tests.golden import NAMES, VECTORS, vector

TESTS = Path(__file__).resolve().parents[1]


def test_every_golden_vector_is_in_the_repository() -> None:
    assert sorted(path.name for path in VECTORS.glob("*.json")) == sorted(NAMES)
    for name in NAMES:
        assert vector(name)["expected"]


def test_no_test_reads_files_from_outside_the_repository() -> None:
    outside = ("shared/vectors", '"shared" / "vectors"', "/work/")
    offenders = [
        str(path.relative_to(TESTS))
        for path in TESTS.rglob("*.py")
        if path != Path(__file__).resolve()
        and any(marker in path.read_text() for marker in outside)
    ]
    assert offenders == []
