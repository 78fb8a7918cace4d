"""The sans-I/O boundary, enforced: every pure core imports no asyncio, asyncpg, aiohttp
or websockets, directly or through anything it imports.

Each core is imported in a fresh interpreter (a module imported earlier by the test
process, or by another core, must not hide what this one pulls in), which reports the
forbidden packages that got loaded and the chain of modules that imported each one.

The list of cores is here, in one place: every module of a package in ``CORE_PACKAGES`` (a
new module in ``feeder/core/`` or ``gap_handler/core/`` is covered by being there), plus the
modules in ``CORE_MODULES``. A new core elsewhere is covered by adding it below.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ("asyncio", "asyncpg", "aiohttp", "websockets")
CORE_PACKAGES = ["feeder.core", "gap_handler.core"]
CORE_MODULES = [
    # Binance protocol: models, parsers, encoders, errors.
    "quaint.binance.models",
    "quaint.binance.parse",
    "quaint.binance.decoder",
    "quaint.binance.rest_parse",
    "quaint.binance.encode",
    "quaint.binance.errors",
    "quaint.binance.archive",
    "quaint.binance.archive_csv",
    "quaint.binance.archive_listing",
    "quaint.binance.rules",
    "quaint.binance.symbols",
    "quaint.binance.exchange_info",
    "quaint.binance.universe",
    # Value types shared by the services, and the injected retry policies.
    "quaint.service.health",
    "quaint.store.quality_event",
    "quaint.service.retry",
    "quaint.service.series",
]

# Run in the child: import the module under a watch that notes, for each forbidden
# package, the modules being executed when it was first looked for (the import chain).
PROBE = """
import importlib, json, sys

FORBIDDEN = set(sys.argv[2].split(","))
chains = {}


class Watch:
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in FORBIDDEN and top not in chains:
            chain, frame = [], sys._getframe(1)
            while frame is not None:
                if frame.f_code.co_name == "<module>":
                    chain.append(frame.f_globals.get("__name__", "?"))
                frame = frame.f_back
            chains[top] = list(reversed(chain)) + [name]
        return None


already = sorted(FORBIDDEN & {m.partition(".")[0] for m in sys.modules})
sys.meta_path.insert(0, Watch())
importlib.import_module(sys.argv[1])
loaded = sorted(FORBIDDEN & {m.partition(".")[0] for m in sys.modules})
print(json.dumps({"already": already, "loaded": loaded, "chains": chains}))
"""


def core_modules() -> list[str]:
    found = list(CORE_MODULES)
    for package in CORE_PACKAGES:
        path = ROOT.joinpath(*package.split("."))
        found.append(package)
        found += [f"{package}.{m.name}" for m in pkgutil.iter_modules([str(path)])]
    return found


def test_the_core_packages_exist_and_hold_modules() -> None:
    """Guard against a renamed package silently leaving nothing to check."""
    modules = core_modules()
    assert "feeder.core.accumulator" in modules and "feeder.core.router" in modules
    assert "gap_handler.core.intervals" in modules and "gap_handler.core.planner" in modules
    assert len(modules) > len(CORE_MODULES) + len(CORE_PACKAGES) + 5


@pytest.mark.parametrize("module", core_modules())
def test_core_imports_no_io_package(module: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, module, ",".join(FORBIDDEN)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["already"] == [], f"the interpreter loads {report['already']} before any import"
    chains = "\n".join(" -> ".join(chain) for chain in report["chains"].values())
    assert report["loaded"] == [], f"{module} loads {report['loaded']}:\n{chains}"
