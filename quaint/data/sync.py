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
from urllib.parse import quote

from quaint.data.read import Instant, Symbols, read_book_ticks, read_candles, read_features
from quaint.data.tables import Decimals, Frame, Output
from quaint.service.settings import Settings, describe_errors

if TYPE_CHECKING:
    import pandas as pd
    import polars as pl
    import pyarrow as pa

Db: TypeAlias = str | Settings | None


def settings_url(db: Db) -> str:
    """A connection URL from a URL, Settings, or the ``DB_*`` environment (None)."""
    if isinstance(db, str):
        return db
    if db is None:
        from pydantic import ValidationError

        try:
            db = Settings()
        except ValidationError as exc:
            raise ValueError("; ".join(describe_errors(exc))) from None
    password = db.db_password.get_secret_value()
    auth = quote(db.db_user, safe="") + (":" + quote(password, safe="") if password else "")
    return f"postgresql://{auth}@{db.db_host}:{db.db_port}/{quote(db.db_name, safe='')}"


def run_sync(read: Callable[[str], Awaitable[Frame]], db: Db) -> Frame:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError(
            "the *_sync reads start an event loop of their own and cannot run inside one "
            "(Jupyter, async code): await quaint.data.read_candles(...) and friends instead"
        )
    url = settings_url(db)

    async def main() -> Frame:
        return await read(url)

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
        lambda url: read_candles(
            url,
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
        lambda url: read_book_ticks(url, symbols, start, end, output=output, decimals=decimals),
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
        lambda url: read_features(url, symbols, start, end, version=version, output=output),
        db,
    )
