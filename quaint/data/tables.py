"""From the store's COPY CSV stream (:mod:`quaint.store.history`) to Arrow tables, and from
Arrow to what the caller asked for.

The stream is parsed in bulk by Arrow's CSV reader, a few MB at a time (cut at a newline:
no value holds one), decimals first as their exact text. The text becomes
``decimal128(38, scale)`` with the scale of the widest value read (at least the exchange's
8 places, so reads of Binance data share one type), or ``decimal256`` when 38 digits do not
hold a value; the cast refuses to round, so a value is never changed. ``float64`` is the
explicit lossy choice.

pandas gets the decimals as Arrow-backed columns (``pd.ArrowDtype``), each at the narrowest
precision that holds its values (same scale): exact, no Python object per value (a 13-month read
of one symbol is 4.5 million values: as ``Decimal`` objects their conversion alone took longer
than the server's whole COPY), and each value still reads as a ``Decimal``. Narrow, because Arrow's
decimal arithmetic gives a result more digits than its inputs (``a - b`` one more, ``a * b``
their sum): at 38 digits even a subtraction would not fit decimal128, at an exchange value's own
15 to 25 it does. ``decimals="object"`` keeps pandas object columns of ``Decimal``.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, cast

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

if TYPE_CHECKING:
    import pandas as pd
    import polars as pl

    Frame: TypeAlias = pd.DataFrame | pl.DataFrame | pa.Table
else:
    Frame: TypeAlias = Any  # what the caller asked for: pandas and polars are imported only then

Decimals = Literal["exact", "object", "float64"]
Output = Literal["pandas", "polars", "arrow"]
OUTPUTS: tuple[Output, ...] = ("pandas", "polars", "arrow")
DECIMALS: tuple[Decimals, ...] = ("exact", "object", "float64")

# Binance's spot prices and quantities have 8 decimal places; a column is never narrower.
MIN_SCALE = 8
TIME = pa.timestamp("us", tz="UTC")
# Arrow's CSV reader is handed this much at a time (COPY sends a few kB per chunk).
PARSE_BYTES = 4 * 2**20


class TextTable:
    """Collects the COPY stream of ``columns`` into Arrow tables of at least ``parse_bytes``
    of text each: ``integers`` as int64, ``time`` as UTC timestamps, ``numerics`` as decimals
    (or float64, by ``decimals``), the rest as text. Each table is typed as it is parsed, so
    only one chunk's text is held at a time; :func:`unify` gives them one schema. ``on_table``
    (if given) takes each table instead of keeping it (the export's streaming path)."""

    def __init__(
        self,
        columns: Sequence[str],
        integers: Sequence[str],
        numerics: Sequence[str] = (),
        decimals: Decimals = "exact",
        on_table: Callable[[pa.Table], None] | None = None,
        parse_bytes: int = PARSE_BYTES,
    ) -> None:
        self.numerics, self.decimals = numerics, decimals
        self.parse_bytes = parse_bytes
        self.types = {c: pa.int64() if c in integers else pa.string() for c in columns}
        self.read = pa_csv.ReadOptions(column_names=list(columns), use_threads=False)
        # Arrow's thread pool: with polars loaded as well the process aborts at exit
        # ("terminate called without an active exception", pyarrow 26 / polars 2.1). One
        # parse at a time is all a stream needs anyway.
        self.convert = pa_csv.ConvertOptions(
            column_types=self.types, strings_can_be_null=True, quoted_strings_can_be_null=False
        )
        self.on_table = on_table
        self.tables: list[pa.Table] = []
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        self.bytes = 0
        self.rows = 0

    async def __call__(self, chunk: bytes) -> None:
        self.pending.append(chunk)
        self.pending_bytes += len(chunk)
        self.bytes += len(chunk)
        if self.pending_bytes >= self.parse_bytes:
            data = b"".join(self.pending)
            cut = data.rfind(b"\n") + 1
            self.pending, self.pending_bytes = [data[cut:]], len(data) - cut
            self._parse(data[:cut])

    def _parse(self, data: bytes) -> None:
        if not data:
            return
        text = pa_csv.read_csv(io.BytesIO(data), read_options=self.read, convert_options=self.convert)
        table = typed(text, self.numerics, self.decimals)
        self.rows += table.num_rows
        if self.on_table is not None:
            self.on_table(table)
        else:
            self.tables.append(table)

    def finish(self) -> pa.Table:
        """Parse what is left; the whole stream as one table (empty when ``on_table`` took it)."""
        self._parse(b"".join(self.pending))
        self.pending, self.pending_bytes = [], 0
        if not self.tables:
            return typed(pa.schema(list(self.types.items())).empty_table(), self.numerics, self.decimals)
        return unify(self.tables)


def unify(tables: Sequence[pa.Table]) -> pa.Table:
    """Tables typed chunk by chunk as one: each decimal column widened to the widest scale
    any chunk needed (a lossless cast), decimal256 where one chunk needed it."""
    if len(tables) == 1:
        return tables[0]
    fields = []
    for i, f in enumerate(tables[0].schema):
        types = [t.schema.field(i).type for t in tables]
        if all(pa.types.is_decimal(t) for t in types) and len(set(types)) > 1:
            scale = max(cast(pa.Decimal128Type, t).scale for t in types)
            wide = any(pa.types.is_decimal256(t) for t in types)
            f = f.with_type(pa.decimal256(76, scale) if wide else pa.decimal128(38, scale))
        fields.append(f)
    schema = pa.schema(fields)
    try:
        return pa.concat_tables([t.cast(schema) for t in tables])
    except pa.ArrowInvalid:  # a wider scale pushed a long value past 38 digits
        wider = pa.schema(
            [
                f.with_type(pa.decimal256(76, f.type.scale)) if pa.types.is_decimal(f.type) else f
                for f in schema
            ]
        )
        return pa.concat_tables([t.cast(wider) for t in tables])


def decimal_type(text: pa.ChunkedArray[pa.StringScalar]) -> pa.DataType:
    """The narrowest exact decimal type for a column of NUMERIC text (see the module doc)."""
    point = pc.find_substring(text, ".")
    length = pc.utf8_length(text)
    has_point = pc.greater_equal(point, pa.scalar(0))
    after = pc.subtract(pc.subtract(length, point), pa.scalar(1))
    places = pc.max(pc.if_else(has_point, after, pa.scalar(0))).as_py()
    digits = pc.max(pc.if_else(has_point, point, length)).as_py()  # a sign counts: one digit spare
    scale = max(MIN_SCALE, places or 0)
    whole = max(digits or 1, 1)
    if whole + scale <= 38:
        return pa.decimal128(38, scale)
    return pa.decimal256(min(76, whole + scale), scale)


def numeric_column(
    name: str, text: pa.ChunkedArray[pa.StringScalar], decimals: Decimals
) -> pa.ChunkedArray[Any]:
    """NUMERIC text as exact decimals, or float64; a clear error for what does not fit."""
    target = pa.float64() if decimals == "float64" else decimal_type(text)
    try:
        return pc.cast(text, target)
    except pa.ArrowInvalid as exc:
        raise ValueError(f"column {name}: a stored value does not convert to {target}: {exc}") from None


def typed(table: pa.Table, numerics: Sequence[str], decimals: Decimals) -> pa.Table:
    """CSV-parsed ``table`` with ``time`` as UTC timestamps and the ``numerics`` as decimals
    (or float64)."""
    columns = []
    for name in table.column_names:
        col = table.column(name)
        if name == "time":
            col = col.cast(TIME)
        elif name in numerics:
            col = numeric_column(name, col, decimals)
        columns.append(col)
    return pa.table(columns, names=table.column_names)


def expand_features(table: pa.Table) -> pa.Table:
    """``symbol, time, version`` and one column per feature key (the union of all rows' keys,
    sorted by name, as a model is fed them; a row without a key has null there), from the
    JSON text in ``features``."""
    docs = [orjson.loads(text or "null") for text in table.column("features").to_pylist()]
    keys: dict[str, None] = {}
    for doc in docs:
        if not isinstance(doc, dict):
            raise ValueError("a feature_cache row holds JSON that is not an object")
        keys.update(dict.fromkeys(doc))
    fixed = ["symbol", "time", "version"]
    clash = sorted(set(keys) & set(fixed))
    if clash:
        raise ValueError(f"feature keys {clash} clash with the columns {fixed}")
    columns: dict[str, Any] = {name: table.column(name) for name in fixed}
    for key in sorted(keys):
        columns[key] = pa.array([doc.get(key) for doc in docs])
    return pa.table(columns)


def narrowest(col: pa.ChunkedArray[Any]) -> pa.ChunkedArray[Any]:
    """A decimal column at the smallest precision that holds each of its values, scale kept (a
    lossless cast; one past decimal128's 38 digits stays as it is)."""
    kind = cast(pa.Decimal128Type, col.type)
    values = [v for v in (pc.min(col).as_py(), pc.max(col).as_py()) if v is not None]
    whole = max((len(str(abs(int(v)))) for v in values), default=1)
    precision = whole + kind.scale
    if precision > 38 or (precision == kind.precision and pa.types.is_decimal128(kind)):
        return col
    return col.cast(pa.decimal128(precision, kind.scale))


def to_pandas(table: pa.Table, decimals: Decimals) -> pd.DataFrame:
    import pandas as pd

    if decimals == "object":
        # Column by column, each Arrow column freed once converted: the peak is the DataFrame
        # (its Decimal objects), not the DataFrame and the Table.
        return table.to_pandas(split_blocks=True, self_destruct=True)
    columns = [narrowest(c) if pa.types.is_decimal(c.type) else c for c in table.columns]
    table = pa.table(columns, names=table.column_names)

    def arrow_backed(kind: pa.DataType) -> pd.ArrowDtype | None:
        return pd.ArrowDtype(kind) if pa.types.is_decimal(kind) else None

    return table.to_pandas(types_mapper=arrow_backed)


def convert(table: pa.Table, output: Output, decimals: Decimals = "exact") -> Frame:
    """``table`` (not used afterwards) as a pandas DataFrame (see the module doc for its
    decimals), a polars DataFrame (``pl.Decimal``) or itself."""
    if output == "arrow":
        return table
    if output == "pandas":
        return to_pandas(table, decimals)
    import polars as pl

    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)  # a Table gives a DataFrame (a Series only from an Array)
    return frame


def check_choice(name: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r}: expected one of {', '.join(map(repr, allowed))}")
