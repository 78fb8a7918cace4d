"""Services never import each other, and the shared package imports no service.

Read from the source (every ``import`` statement, at any depth), so an import inside a
function counts as much as one at the top. The simulator counts as a service here: the
gap handler's read API once imported its request rules, which now live in quaint.binance.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ("feeder", "gap_handler", "simulator")
# What each production package may not import.
FORBIDDEN: dict[str, set[str]] = {
    "quaint": {*SERVICES, "bench", "tests"},
    **{name: {*(set(SERVICES) - {name}), "bench", "tests"} for name in SERVICES},
}


def imported_tops(path: Path) -> set[tuple[int, str]]:
    """(line, top-level package) of every absolute import in a file."""
    found: set[tuple[int, str]] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found |= {(node.lineno, a.name.partition(".")[0]) for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add((node.lineno, node.module.partition(".")[0]))
    return found


def test_the_scan_sees_imports() -> None:
    """Guard: the scan finds a known import (a broken walk would pass every package)."""
    tops = {top for _, top in imported_tops(ROOT / "gap_handler" / "api.py")}
    assert "quaint" in tops and "aiohttp" in tops


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_no_other_service(package: str) -> None:
    bad = [
        f"{path.relative_to(ROOT)}:{line} imports {top}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for line, top in sorted(imported_tops(path))
        if top in FORBIDDEN[package]
    ]
    assert not bad, "\n".join(bad)
