"""Per-symbol market profiles: price level, tick and lot size, activity.

A profile is a pure function of ``(seed, symbol)``. Well-known assets get realistic
magnitudes (BTC in the tens of thousands of USDT, ETH in the thousands); any other
symbol gets a plausible price derived from a hash of its name, so every symbol a
user invents still behaves like a listed pair.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from decimal import Decimal

# Internal fixed-point unit: every price and quantity is an int of 1e-8, the
# resolution of Binance's 8-decimal strings, so arithmetic is exact and the stream,
# REST and truth endpoints can never disagree by a rounding step.
UNIT = 10**8

# Longest first, so "FDUSD" wins over "USD" and "USDT" over "USD".
_QUOTES = ("FDUSD", "USDT", "USDC", "BUSD", "TUSD", "BTC", "ETH", "BNB", "EUR", "TRY", "DAI", "USD")
_USD_PRICE = {
    "USDT": 1.0,
    "USDC": 1.0,
    "BUSD": 1.0,
    "FDUSD": 1.0,
    "TUSD": 1.0,
    "DAI": 1.0,
    "USD": 1.0,
    "EUR": 1.08,
    "TRY": 0.03,
    "BTC": 45_000.0,
    "ETH": 2_500.0,
    "BNB": 350.0,
    "SOL": 100.0,
    "XRP": 0.6,
    "ADA": 0.5,
    "DOGE": 0.08,
    "LTC": 70.0,
    "DOT": 7.0,
    "LINK": 15.0,
    "TRX": 0.11,
}
# Rough per-minute activity of the deepest books (quote notional in USD, trades).
_ACTIVITY = {"BTC": (2_000_000.0, 1_000.0), "ETH": (1_000_000.0, 600.0), "BNB": (200_000.0, 250.0)}
_VOLATILITY = {"BTC": 0.0006, "ETH": 0.0008}


def stable_hash64(*parts: object) -> int:
    """A 64-bit hash that, unlike ``hash()``, is the same in every process."""
    data = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def split_symbol(symbol: str) -> tuple[str, str]:
    """``"ETHBTC"`` -> ``("ETH", "BTC")``; unknown quotes fall back to the last 4 letters."""
    for quote in _QUOTES:
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return symbol[: -len(quote)], quote
    cut = max(1, len(symbol) - 4)
    return symbol[:cut], symbol[cut:]


def _unit_interval(value: int, salt: int) -> float:
    """A hash-derived float in [0, 1)."""
    return ((value ^ salt) % 1_000_003) / 1_000_003


@dataclass(frozen=True, slots=True)
class SymbolProfile:
    symbol: str
    base_asset: str
    quote_asset: str
    base_price: float
    tick: int  # price tick, in 1e-8 units
    step: int  # quantity step (lot size), in 1e-8 units
    sigma: float  # per-minute standard deviation of the log price
    quote_per_minute: float  # typical traded quote notional per minute
    trades_per_minute: float
    key: int  # 64-bit hash of (seed, symbol): the root of all of the symbol's randomness


_POW10: list[int] = [1, 10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000, 100_000_000]


def _power_of_ten_units(exponent: int) -> int:
    """10**exponent expressed in 1e-8 units, clamped to [1e-8, 1]."""
    return _POW10[8 + max(-8, min(0, exponent))]


def make_profile(seed: int, symbol: str) -> SymbolProfile:
    base, quote = split_symbol(symbol)
    key = stable_hash64("sim-profile", seed, symbol)
    quote_usd = _USD_PRICE.get(quote, 1.0)
    # Unknown assets: 10**U(-3, 2) USD, a typical altcoin range.
    base_usd = _USD_PRICE.get(base, 10 ** (-3 + 5 * _unit_interval(key, 0x5EED)))
    price = base_usd / quote_usd
    magnitude = math.floor(math.log10(price))
    # Binance ticks are ~1e-5..1e-6 of the price, never coarser than 0.01 on big pairs.
    tick = _power_of_ten_units(min(-2, magnitude - 4))
    step = _power_of_ten_units(min(-1, -magnitude - 1))
    notional_usd, trades = _ACTIVITY.get(
        base,
        (10 ** (3 + 2 * _unit_interval(key, 0xAC7)), 5 + 300 * _unit_interval(key, 0x7DE)),
    )
    sigma = _VOLATILITY.get(base, 0.001 + 0.001 * _unit_interval(key, 0x51C))
    return SymbolProfile(
        symbol=symbol,
        base_asset=base,
        quote_asset=quote,
        base_price=price,
        tick=tick,
        step=step,
        sigma=sigma,
        quote_per_minute=notional_usd / quote_usd,
        trades_per_minute=trades,
        key=key,
    )


def dec(units: int) -> Decimal:
    """Integer of 1e-8 -> Decimal with exactly 8 decimal places."""
    return Decimal(units).scaleb(-8)
