"""The reads of :mod:`quaint.data.read` for code without an event loop (a script, a training job).

Each ``*_sync`` runs its read in a fresh event loop on a connection of its own; ``db`` is a
``postgresql://`` URL, a :class:`~quaint.service.settings.Settings`, or None for the services'
own ``DB_*`` environment. Inside a running loop (Jupyter, async code) they refuse: await the
async reads there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Literal, TypeAlias, overload

import asyncpg
from pydantic import ValidationError

from quaint.data.read import Instant, Symbols, read_book_ticks, read_candles, read_features
from quaint.data.tables import Decimals, Frame, Output
from quaint.service.settings import Settings, describe_errors
from quaint.store.pool import connect_kwargs

if TYPE_CHECKING:
    import pandas as pd
    import polars as pl
    import pyarrow as pa

Db: TypeAlias = str | Settings | None


def settings_of(db: Settings | None) -> Settings:
    """``db``, or the services' Settings from the ``DB_*`` environment (None)."""
    if db is not None:
        return db
    try:
        return Settings()
    except ValidationError as exc:
        raise ValueError("; ".join(describe_errors(exc))) from None


def run_sync(read: Callable[[asyncpg.Connection], Awaitable[Frame]], db: Db) -> Frame:
    """``read`` on a connection of its own (from a URL, or as the services connect) in a
    fresh event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError(
            "the *_sync reads start an event loop of their own and cannot run inside one "
            "(Jupyter, async code): await quaint.data.read_candles(...) and friends instead"
        )
    settings = None if isinstance(db, str) else settings_of(db)

    async def main() -> Frame:
        if settings is None:
            conn = await asyncpg.connect(db)
        else:
            conn = await asyncpg.connect(**connect_kwargs(settings), timeout=settings.db_connect_timeout_s)
        try:
            return await read(conn)
        finally:
            await conn.close()

    return asyncio.run(main())


@overload
def read_candles_sync(
    db: Db,
    symbols: Symbols,
    start: Instant,
    end: Instant | None = None,
    *,
    interval: str = "1m",
    complete_only: bool = False,
    output: Literal["pandas"] = "pandas",
    decimals: Decimals = ...,
) -> pd.DataFrame: ...


@overload
def read_candles_sync(
    db: Db,
    symbols: Symbols,
    start: Instant,
    end: Instant | None = None,
    *,
    interval: str = "1m",
    complete_only: bool = False,
    output: Literal["polars"],
    decimals: Decimals = ...,
) -> pl.DataFrame: ...


@overload
def read_candles_sync(
    db: Db,
    symbols: Symbols,
    start: Instant,
    end: Instant | None = None,
    *,
    interval: str = "1m",
    complete_only: bool = False,
    output: Literal["arrow"],
    decimals: Decimals = ...,
) -> pa.Table: ...


@overload
def read_candles_sync(
    db: Db,
    symbols: Symbols,
    start: Instant,
    end: Instant | None = None,
    *,
    interval: str = "1m",
    complete_only: bool = False,
    output: Output,
    decimals: Decimals = ...,
) -> Frame: ...


def read_candles_sync(
    db: Db,
    symbols: Symbols,
    start: Instant,
    end: Instant | None = None,
    *,
    interval: str = "1m",
    complete_only: bool = False,
    output: Output = "pandas",
    decimals: Decimals = "exact",
) -> Frame:
    """:func:`quaint.data.read.read_candles` without an event loop."""
    return run_sync(
        lambda conn: read_candles(
            conn,
            symbols,
            start,
            end,
            interval=interval,
            complete_only=complete_only,
            output=output,
            decimals=decimals,
        ),
        db,
    )


@overload
def read_book_ticks_sync(
    db: Db,
    symbols: Symbols,
    start: Instant,
    end: Instant | None = None,
    *,
    output: Literal["pandas"] = "pandas",
    decimals: Decimals = ...,
) -> pd.DataFrame: ...


@overload
def read_book_ticks_sync(
    db: Db,
    symbols: Symbols,
    start: Instant,
    end: Instant | None = None,
    *,
    output: Literal["polars"],
    decimals: Decimals = ...,
) -> pl.DataFrame: ...


@overload
def read_book_ticks_sync(
    db: Db,
    symbols: Symbols,
    start: Instant,
    end: Instant | None = None,
    *,
    output: Literal["arrow"],
    decimals: Decimals = ...,
) -> pa.Table: ...


@overload
def read_book_ticks_sync(
    db: Db,
    symbols: Symbols,
    start: Instant,
    end: Instant | None = None,
    *,
    output: Output,
    decimals: Decimals = ...,
) -> Frame: ...


def read_book_ticks_sync(
    db: Db,
    symbols: Symbols,
    start: Instant,
    end: Instant | None = None,
    *,
    output: Output = "pandas",
    decimals: Decimals = "exact",
) -> Frame:
    """:func:`quaint.data.read.read_book_ticks` without an event loop."""
    return run_sync(
        lambda conn: read_book_ticks(conn, symbols, start, end, output=output, decimals=decimals),
        db,
    )


@overload
def read_features_sync(
    db: Db,
    symbols: Symbols,
    start: Instant,
    end: Instant | None = None,
    *,
    version: str | None = None,
    output: Literal["pandas"] = "pandas",
) -> pd.DataFrame: ...


@overload
def read_features_sync(
    db: Db,
    symbols: Symbols,
    start: Instant,
    end: Instant | None = None,
    *,
    version: str | None = None,
    output: Literal["polars"],
) -> pl.DataFrame: ...


@overload
def read_features_sync(
    db: Db,
    symbols: Symbols,
    start: Instant,
    end: Instant | None = None,
    *,
    version: str | None = None,
    output: Literal["arrow"],
) -> pa.Table: ...


@overload
def read_features_sync(
    db: Db,
    symbols: Symbols,
    start: Instant,
    end: Instant | None = None,
    *,
    version: str | None = None,
    output: Output,
) -> Frame: ...


def read_features_sync(
    db: Db,
    symbols: Symbols,
    start: Instant,
    end: Instant | None = None,
    *,
    version: str | None = None,
    output: Output = "pandas",
) -> Frame:
    """:func:`quaint.data.read.read_features` without an event loop."""
    return run_sync(
        lambda conn: read_features(conn, symbols, start, end, version=version, output=output),
        db,
    )
