"""The layers: API routes and console pages reach the store only through the operations
(tocsin.app).

Walks every module under src/tocsin/api/ and src/tocsin/web/: none imports tocsin.store,
none but api/app.py (which starts and stops the service) imports tocsin.service, and none
reads an attribute named `store` (a route calling `something.store.method(...)`).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import tocsin.api
import tocsin.web

API = Path(tocsin.api.__file__).parent
WEB = Path(tocsin.web.__file__).parent
MODULES = sorted(API.glob("*.py")) + sorted(WEB.glob("*.py"))


def imported(tree: ast.AST) -> list[str]:
    """Every module a tree imports, dotted, `from x import y` counted as x and x.y."""
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def breaches(path: Path) -> list[str]:
    """What in one API module reaches past the operations layer."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = [
        f"imports {name}"
        for name in imported(tree)
        if name == "tocsin.store" or name.startswith("tocsin.store.")
    ]
    if path.name != "app.py":
        found += [f"imports {name}" for name in imported(tree) if name == "tocsin.service"]
    found += [
        f"line {node.lineno}: .store"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr == "store"
    ]
    return found


def test_the_walk_sees_every_api_and_console_module() -> None:
    assert {path.name for path in MODULES} >= {"app.py", "deps.py", "ingest.py", "users.py"}
    assert {path.name for path in MODULES} >= {"integrations.py", "base.py", "auth.py"}


@pytest.mark.parametrize(
    "path", MODULES, ids=[f"{path.parent.name}/{path.name}" for path in MODULES]
)
def test_api_module_calls_operations_not_the_store(path: Path) -> None:
    assert breaches(path) == []


def test_the_walk_would_see_a_route_calling_the_store(tmp_path: Path) -> None:
    route = tmp_path / "route.py"
    route.write_text(
        "from tocsin.store.base import Changed\n"
        "from tocsin import service\n"
        "async def read(runtime):\n"
        "    return await runtime.store.get_integration(1, 2)\n"
    )
    assert breaches(route) == [
        "imports tocsin.store.base",
        "imports tocsin.store.base.Changed",
        "imports tocsin.service",
        "line 4: .store",
    ]
