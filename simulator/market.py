"""Deterministic market data: every candle is a pure function of (seed, symbol, minute).

Sans-I/O: no clock, no sockets. Callers pass the minute (or instant) they want.

Price level. The log price at a minute boundary is a sum of value-noise octaves
(random values on a lattice of 1, 8, 64, ... minutes, smoothly interpolated) whose
amplitudes grow like sqrt(scale), so increments over any horizon look like a random
walk's (std ~ sigma * sqrt(minutes)) while any minute is evaluated in O(octaves),
without iterating from some origin. The octaves stop at ~half a year, so prices
wander by tens of percent over the 400-day history but never drift to absurd values.

Candles. ``open(m) = B(m)`` and ``close(m) = B(m + 1)`` where ``B`` is the boundary
price quantised to the tick, so consecutive candles are exactly continuous. High,
low, trade count, volumes and the volume-weighted price come from a hash of
(seed, symbol, minute). All values are integers of 1e-8 (see ``symbols.UNIT``), turned
into ``Decimal`` only at the edge, so REST history and the live stream agree exactly.

Intra-minute. A partial candle at checkpoint ``j`` (every 2 s, ``j = 0..30``) follows a
hash-seeded path that starts at the open, touches the high and the low, and ends at
the close; trades and volumes accumulate by hash-seeded weights that sum exactly to
the final values, so the last partial equals the truth.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import NamedTuple

from quaint.binance.models import MINUTE_MS, BookTick, Candle
from quaint.binance.symbols import UNIT, SymbolProfile, dec, make_profile

CHECKPOINT_MS = 2_000  # Binance pushes kline updates every 2 s for intervals >= 1m
CHECKPOINTS = MINUTE_MS // CHECKPOINT_MS  # 30; checkpoint 30 is the close
_MASK = (1 << 64) - 1
# (scale in minutes); amplitude is sigma * sqrt(scale / 2) per octave (see module doc).
_SCALES = (1, 8, 64, 512, 4096, 32768, 262144)
# The slowest octaves are halved: prices then wander by ~15 % (1 sigma) over the
# history instead of ~30 %, which keeps long backfills looking like one market.
_DAMPED_SCALE = 32768
_REPLAY_TRADE_ID_STRIDE = 1_000_000


def _mix(x: int) -> int:
    """splitmix64's finaliser: a fast, well-distributed 64-bit integer hash."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def _uniforms(h: int) -> tuple[float, float, float, float]:
    """Four floats in (0, 1) from the four 16-bit lanes of a 64-bit hash."""
    return (
        ((h & 0xFFFF) + 0.5) / 65536.0,
        (((h >> 16) & 0xFFFF) + 0.5) / 65536.0,
        (((h >> 32) & 0xFFFF) + 0.5) / 65536.0,
        (((h >> 48) & 0xFFFF) + 0.5) / 65536.0,
    )


def _gauss(key: int, scale: int, k: int) -> float:
    """Approximately standard-normal lattice value (Irwin-Hall of 4 uniforms)."""
    u = _uniforms(_mix(key ^ ((k * 0x9E3779B97F4A7C15 + scale) & _MASK)))
    return (u[0] + u[1] + u[2] + u[3] - 2.0) * 1.7320508075688772


def to_units(value: Decimal) -> int:
    """Decimal -> integer of 1e-8 (exact for Binance's 8-decimal values)."""
    return int(value.scaleb(8).to_integral_value())


class RawCandle(NamedTuple):
    """A final candle in integer units plus what the intra-minute path needs.
    (A NamedTuple rather than a frozen dataclass: it is built ~1000 times per REST
    page and tuple construction is several times cheaper.)"""

    open: int
    high: int
    low: int
    close: int
    volume: int
    quote: int
    trades: int
    taker_base: int
    taker_quote: int
    vwap: int
    first_trade_id: int


@dataclass(frozen=True, slots=True)
class IntraMinute:
    path: tuple[int, ...]  # CHECKPOINTS + 1 prices; path[0] = open, path[-1] = close
    weights: tuple[int, ...]  # cumulative activity weights; weights[0] = 0


class MarketModel:
    """Truth for every configured symbol. ``replay`` maps a symbol to recorded candles
    (open time -> Candle) that replace the random walk for that symbol."""

    def __init__(
        self,
        seed: int,
        symbols: list[str],
        replay: Mapping[str, Mapping[int, Candle]] | None = None,
        cache_size: int = 200_000,
    ) -> None:
        self.seed = seed
        self.symbols = list(symbols)
        self.profiles = {s: make_profile(seed, s) for s in symbols}
        self._replay = {s: dict(rows) for s, rows in (replay or {}).items()}
        self._raw_cached = lru_cache(maxsize=cache_size)(self._raw_uncached)
        self._intra_cached = lru_cache(maxsize=4096)(self._intra_uncached)

    def has_gaps(self, symbol: str) -> bool:
        """Whether some minutes may have no candle (replayed symbols only)."""
        return symbol in self._replay

    # ---- price level -------------------------------------------------------------

    def _levels(self, prof: SymbolProfile, first_minute: int, count: int) -> list[float]:
        """Log-price offsets at minute boundaries first_minute .. first_minute+count-1.

        Evaluated octave by octave over the whole range (one lattice walk per octave
        instead of per minute); the per-boundary sum is added in the same octave
        order as a single-point evaluation, so both give bit-identical floats."""
        key = prof.key
        # The 1-minute octave comes first (0.0 + x == x, so no addition is lost).
        amp1 = prof.sigma * math.sqrt(0.5)
        acc = [amp1 * _gauss(key, 1, m) for m in range(first_minute, first_minute + count)]
        for scale in _SCALES[1:]:
            amp = prof.sigma * math.sqrt(scale / 2.0) * (0.5 if scale >= _DAMPED_SCALE else 1.0)
            k, r = divmod(first_minute, scale)
            g0, g1 = _gauss(key, scale, k), _gauss(key, scale, k + 1)
            for i in range(count):
                t = r / scale
                acc[i] += amp * (g0 + (g1 - g0) * (t * t * (3.0 - 2.0 * t)))
                r += 1
                if r == scale:
                    r = 0
                    k += 1
                    g0, g1 = g1, _gauss(key, scale, k + 1)
        return acc

    def _boundary_prices(self, prof: SymbolProfile, first_minute: int, count: int) -> list[int]:
        base = prof.base_price * UNIT
        tick = prof.tick
        exp = math.exp
        return [
            max(tick, round(base * exp(x) / tick) * tick) for x in self._levels(prof, first_minute, count)
        ]

    # ---- final candles -----------------------------------------------------------

    def _raw_from_prices(self, prof: SymbolProfile, minute: int, o: int, c: int) -> RawCandle:
        tick, step = prof.tick, prof.step
        # A single 64-bit hash feeds every random choice of the minute (10-bit wicks,
        # four 8-bit lanes for the activity, 6-bit vwap and taker shares): one hash
        # instead of several keeps a 1000-row REST page within a few milliseconds.
        h = _mix(prof.key ^ (minute << 2 | 1))
        # Wicks: exponential extensions beyond the body, about sigma/2 of the price.
        wick = prof.sigma * 0.5 * o
        high = max(o, c) + int(-math.log(((h & 0x3FF) + 0.5) / 1024.0) * wick) // tick * tick
        low = max(
            tick, min(o, c) - int(-math.log((((h >> 10) & 0x3FF) + 0.5) / 1024.0) * wick) // tick * tick
        )
        # Busier minutes move more: activity grows with the body's size.
        lanes = ((h >> 20) & 0xFF) + ((h >> 28) & 0xFF) + ((h >> 36) & 0xFF) + ((h >> 44) & 0xFF)
        z = (lanes + 2.0 - 512.0) / 256.0 * 1.7320508075688772
        move = abs(c - o) / (o * prof.sigma)
        activity = math.exp(0.4 * z) * (1.0 + 0.5 * min(4.0, move)) / 1.4
        max_trades = int(prof.trades_per_minute * 12) + 10
        trades = max(1, min(max_trades, round(prof.trades_per_minute * activity)))
        vwap = low + (high - low) * (19 + ((h >> 52) & 0x3F)) // 100
        volume = max(step, int(prof.quote_per_minute * activity * UNIT / vwap * UNIT) // step * step)
        taker_base = (volume // step) * (15 + ((h >> 58) & 0x3F) * 70 // 63) // 100 * step
        # Positional: this is the hot path of REST pages.
        return RawCandle(
            o,
            high,
            low,
            c,
            volume,
            volume * vwap // UNIT,
            trades,
            taker_base,
            taker_base * vwap // UNIT,
            vwap,
            minute * max_trades,
        )

    def _raw_uncached(self, symbol: str, minute: int) -> RawCandle | None:
        replay = self._replay.get(symbol)
        if replay is not None:
            found = replay.get(minute * MINUTE_MS)
            return None if found is None else _raw_from_candle(found, minute)
        prof = self.profiles[symbol]
        o, c = self._boundary_prices(prof, minute, 2)
        return self._raw_from_prices(prof, minute, o, c)

    def raw(self, symbol: str, minute: int) -> RawCandle | None:
        return self._raw_cached(symbol, minute)

    def candle(self, symbol: str, open_time: int) -> Candle | None:
        """The final candle of the minute starting at ``open_time`` (ms), or ``None``
        when the symbol has no data for it (only possible for replayed symbols)."""
        raw = self.raw(symbol, open_time // MINUTE_MS)
        return None if raw is None else _to_candle(symbol, open_time // MINUTE_MS * MINUTE_MS, raw)

    def candles(self, symbol: str, first_open_time: int, count: int) -> list[Candle | None]:
        """``count`` consecutive final candles; faster than ``count`` calls to ``candle``."""
        first = first_open_time // MINUTE_MS
        if symbol in self._replay or count <= 2:
            return [self.candle(symbol, (first + i) * MINUTE_MS) for i in range(count)]
        prof = self.profiles[symbol]
        prices = self._boundary_prices(prof, first, count + 1)
        return [
            _to_candle(
                symbol,
                (first + i) * MINUTE_MS,
                self._raw_from_prices(prof, first + i, prices[i], prices[i + 1]),
            )
            for i in range(count)
        ]

    # ---- intra-minute ------------------------------------------------------------

    def _intra_uncached(self, symbol: str, minute: int) -> IntraMinute | None:
        raw = self.raw(symbol, minute)
        if raw is None:
            return None
        tick = self.profiles[symbol].tick
        rng = random.Random(_mix(self.profiles[symbol].key ^ (minute << 2 | 3)))
        i_high, i_low = rng.sample(range(1, CHECKPOINTS), 2)
        anchors = sorted([(0, raw.open), (i_high, raw.high), (i_low, raw.low), (CHECKPOINTS, raw.close)])
        path: list[int] = []
        for (i0, p0), (i1, p1) in itertools.pairwise(anchors):
            path.append(p0)
            for i in range(i0 + 1, i1):
                price = p0 + (p1 - p0) * (i - i0) // (i1 - i0) + rng.randint(-2, 2) * tick
                # Snap to the tick grid anchored at the low, inside [low, high].
                price = raw.low + (price - raw.low) // tick * tick
                path.append(min(raw.high, max(raw.low, price)))
        path.append(raw.close)
        cumulative = [0]
        for _ in range(CHECKPOINTS):
            cumulative.append(cumulative[-1] + rng.randint(20, 180))
        return IntraMinute(path=tuple(path), weights=tuple(cumulative))

    def partial(self, symbol: str, open_time: int, checkpoint: int) -> tuple[Candle, int, int] | None:
        """The candle as it stood ``checkpoint * 2 s`` into its minute (30 = final),
        with its first and last trade ids (-1, -1 before any trade)."""
        minute = open_time // MINUTE_MS
        raw = self.raw(symbol, minute)
        intra = self._intra_cached(symbol, minute)
        if raw is None or intra is None:
            return None
        j = max(0, min(CHECKPOINTS, checkpoint))
        start = minute * MINUTE_MS
        if j == CHECKPOINTS:
            return _to_candle(symbol, start, raw), raw.first_trade_id, raw.first_trade_id + raw.trades - 1
        if j == 0 or raw.trades == 0:
            o = raw.open
            empty = RawCandle(o, o, o, o, 0, 0, 0, 0, 0, o, raw.first_trade_id)
            return _to_candle(symbol, start, empty), -1, -1
        step = self.profiles[symbol].step
        w, total = intra.weights[j], intra.weights[-1]
        seen = intra.path[: j + 1]
        trades = max(1, raw.trades * w // total)
        volume = max(min(raw.volume, step), (raw.volume // step) * w // total * step)
        taker = (raw.taker_base // step) * w // total * step
        part = RawCandle(
            open=raw.open,
            high=max(seen),
            low=min(seen),
            close=intra.path[j],
            volume=volume,
            quote=volume * raw.vwap // UNIT,
            trades=trades,
            taker_base=taker,
            taker_quote=taker * raw.vwap // UNIT,
            vwap=raw.vwap,
            first_trade_id=raw.first_trade_id,
        )
        return _to_candle(symbol, start, part), raw.first_trade_id, raw.first_trade_id + trades - 1

    def last_price(self, symbol: str, at_ms: int) -> int | None:
        """Last trade price (1e-8 units) at instant ``at_ms``."""
        minute = at_ms // MINUTE_MS
        intra = self._intra_cached(symbol, minute)
        if intra is None:
            return None
        return intra.path[(at_ms - minute * MINUTE_MS) // CHECKPOINT_MS]

    def book(self, symbol: str, at_ms: int, update_id: int) -> BookTick | None:
        """Best bid/ask around the last price at ``at_ms``; bid < ask always."""
        last = self.last_price(symbol, at_ms)
        if last is None:
            return None
        prof = self.profiles[symbol]
        tick, step = prof.tick, prof.step
        h = _mix(prof.key ^ _mix(update_id * 2 + 7))
        bid = max(tick, last - (h & 1) * tick)
        ask = bid + (1 + ((h >> 1) % 4 == 0)) * tick
        return BookTick(
            symbol=symbol,
            update_id=update_id,
            bid_price=dec(bid),
            bid_qty=dec(step * (1 + (h >> 8) % 5000)),
            ask_price=dec(ask),
            ask_qty=dec(step * (1 + (h >> 24) % 5000)),
            received_at=at_ms,
        )


def _to_candle(symbol: str, open_time: int, raw: RawCandle) -> Candle:
    o, h, lo, c, v, q, n, tb, tq, _, _ = raw
    # Positional and with ``dec`` inlined: this runs 1000 times per REST page.
    return Candle(
        symbol,
        open_time,
        open_time + MINUTE_MS - 1,
        Decimal(o).scaleb(-8),
        Decimal(h).scaleb(-8),
        Decimal(lo).scaleb(-8),
        Decimal(c).scaleb(-8),
        Decimal(v).scaleb(-8),
        Decimal(q).scaleb(-8),
        n,
        Decimal(tb).scaleb(-8),
        Decimal(tq).scaleb(-8),
    )


def _raw_from_candle(candle: Candle, minute: int) -> RawCandle:
    volume = to_units(candle.volume)
    quote = to_units(candle.quote_asset_volume)
    low, high = to_units(candle.low), to_units(candle.high)
    vwap = min(high, max(low, quote * UNIT // volume)) if volume else to_units(candle.close)
    return RawCandle(
        open=to_units(candle.open),
        high=high,
        low=low,
        close=to_units(candle.close),
        volume=volume,
        quote=quote,
        trades=candle.number_of_trades,
        taker_base=to_units(candle.taker_buy_base_asset_volume),
        taker_quote=to_units(candle.taker_buy_quote_asset_volume),
        vwap=vwap,
        first_trade_id=minute * _REPLAY_TRADE_ID_STRIDE,
    )
