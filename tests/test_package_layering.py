"""Services never import each other, the shared package imports no service, and nothing the
services run imports quaint.data or its libraries (pandas, polars, pyarrow: the ``data`` extra,
which the Docker image does not install).

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


# quaint.data and the command that dispatches to it; everything else in quaint is shared with
# the services.
DATA_FILES = {ROOT / "quaint" / "__main__.py", *(ROOT / "quaint" / "data").rglob("*.py")}
DATA_LIBRARIES = {"pandas", "polars", "pyarrow"}


def imported_modules(path: Path) -> set[tuple[int, str]]:
    """(line, full module name) of every absolute import in a file (``from a import b`` counts
    as ``a.b`` too: b may be a module)."""
    found: set[tuple[int, str]] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found |= {(node.lineno, a.name) for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add((node.lineno, node.module))
            found |= {(node.lineno, f"{node.module}.{a.name}") for a in node.names}
    return found


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


@pytest.mark.parametrize("package", [*SERVICES, "quaint"])
def test_services_never_import_the_data_extra(package: str) -> None:
    files = [p for p in sorted((ROOT / package).rglob("*.py")) if p not in DATA_FILES]
    bad = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in files
        for line, name in sorted(imported_modules(path))
        if name == "quaint.data"
        or name.startswith("quaint.data.")
        or name.partition(".")[0] in DATA_LIBRARIES
    ]
    assert not bad, "\n".join(bad)


def test_the_data_scan_sees_imports() -> None:
    """Guard: the scan finds quaint.data's own imports of the store and of pyarrow."""
    names = {name for _, name in imported_modules(ROOT / "quaint" / "data" / "read.py")}
    assert "quaint.store.history" in names and "quaint.data.tables" in names
    assert "pyarrow" in {name for _, name in imported_modules(ROOT / "quaint" / "data" / "tables.py")}
