"""``python -m quaint <command>``: the project's own one-shot tools.

``export`` (``quaint.data.export``) needs the ``data`` extra; without it the command says how
to install it (exit 2) instead of a traceback.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from typing import cast

COMMANDS = {"export": "quaint.data.export"}
USAGE = "usage: python -m quaint export --symbols SYM1,SYM2 --since TIME [--until TIME] --out DIR [...]"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in COMMANDS:
        print(USAGE, file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(COMMANDS[args[0]])
    except ImportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return cast(Callable[[Sequence[str]], int], module.main)(args[1:])


if __name__ == "__main__":
    sys.exit(main())
