"""``python -m bench <name>``: run one benchmark; it starts what it needs itself."""

from __future__ import annotations

import argparse
import importlib

BENCHMARKS = {
    "ingest": "bench.ingest",
    "latency": "bench.latency",
    "backfill": "bench.backfill",
    "scan": "bench.scan",
    "memory": "bench.memory",
    "ceiling": "bench.ceiling",
    "archive": "bench.archive",
    "read": "bench.read",
    "universe": "bench.universe",
    "scan-scale": "bench.scan_scale",
}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("name", choices=sorted(BENCHMARKS))
    # The benchmark's own flags (e.g. --seconds); each module reads sys.argv[2:].
    parser.add_argument("options", nargs=argparse.REMAINDER, help="the benchmark's own flags")
    args = parser.parse_args()
    importlib.import_module(BENCHMARKS[args.name]).main()


if __name__ == "__main__":
    main()
