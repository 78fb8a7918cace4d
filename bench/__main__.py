"""``python -m bench <name>``: run one benchmark; it starts what it needs itself."""

from __future__ import annotations

import argparse
import importlib

BENCHMARKS = {
    "ceiling": "bench.ceiling",
    "scan": "bench.scan",
}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("name", choices=sorted(BENCHMARKS))
    args = parser.parse_args()
    importlib.import_module(BENCHMARKS[args.name]).main()


if __name__ == "__main__":
    main()
