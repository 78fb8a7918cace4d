"""Which symbols a feeder shard streams (pure: no I/O, importable anywhere).

``SHARD_COUNT`` feeders split a symbol list: each symbol has a home shard from a stable hash
of its name (sha256, so the split is the same on every host, Python version and restart,
unlike ``hash()``), and with ``REPLICAS=r`` it is streamed by its home shard and the next
``r - 1`` (mod the count), so any ``r - 1`` shards may be down without a symbol going dark.
Adding a symbol never moves the others; changing ``SHARD_COUNT`` reshuffles them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def home_shard(symbol: str, count: int) -> int:
    """The shard (0 .. count-1) a symbol belongs to."""
    if count < 1:
        raise ValueError("the shard count must be at least 1")
    digest = hashlib.sha256(symbol.encode()).digest()
    return int.from_bytes(digest[:8], "big") % count


def in_shard(symbol: str, index: int, count: int, replicas: int = 1) -> bool:
    """Whether shard ``index`` of ``count`` streams ``symbol`` (``replicas`` shards each do)."""
    if not 0 <= index < count:
        raise ValueError(f"shard index {index} is not within 0..{count - 1}")
    if not 1 <= replicas <= count:
        raise ValueError(f"replicas must be within 1..{count}")
    return (index - home_shard(symbol, count)) % count < replicas


def shard_symbols(symbols: Iterable[str], index: int, count: int, replicas: int = 1) -> list[str]:
    """The symbols of ``symbols`` this shard streams, in their order."""
    return [s for s in symbols if in_shard(s, index, count, replicas)]
