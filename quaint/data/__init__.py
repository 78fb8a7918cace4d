"""Reading the stored history into pandas, polars or Arrow (the ``data`` extra:
``pip install quaint2[data]``); see :mod:`quaint.data.read` and README "Reading the history".

The services never import this package: their image installs only the base package.
"""

from __future__ import annotations

import importlib.util

_MISSING = [name for name in ("pyarrow", "pandas", "polars") if importlib.util.find_spec(name) is None]
if _MISSING:
    raise ImportError(
        f"quaint.data needs {', '.join(_MISSING)} (the 'data' extra): pip install 'quaint2[data]'"
        " (in this repository: pip install -e '.[data]')"
    )

from quaint.data.read import (  # noqa: E402  (after the check: a missing extra is one clear line)
    read_book_ticks,
    read_candles,
    read_features,
)
from quaint.data.sync import read_book_ticks_sync, read_candles_sync, read_features_sync  # noqa: E402
from quaint.data.tables import Frame  # noqa: E402

__all__ = [
    "Frame",
    "read_book_ticks",
    "read_book_ticks_sync",
    "read_candles",
    "read_candles_sync",
    "read_features",
    "read_features_sync",
]
