"""``GET /api/v3/exchangeInfo`` bodies, modelled on a real capture
(tests/fixtures/binance/cryptofeed_binance_exchangeInfo_BTCUSDT_2021-10-12.json) plus
the fields Binance added since (permissionSets, NOTIONAL, self-trade prevention...),
with tick and lot sizes from the symbol profiles (:mod:`quaint.binance.symbols`). Shared: the
simulator serves them, and the gap handler's read API answers clients with them."""

from __future__ import annotations

from typing import Any

from quaint.binance.encode import format_decimal
from quaint.binance.symbols import UNIT, SymbolProfile, dec


def rate_limits(weight_limit: int) -> list[dict[str, Any]]:
    return [
        {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": weight_limit},
        {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
        {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
        {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000},
    ]


def symbol_entry(prof: SymbolProfile, status: str = "TRADING") -> dict[str, Any]:
    f = format_decimal
    tick, step = dec(prof.tick), dec(prof.step)
    max_qty = dec(min(9_000 * UNIT, prof.step * 10**9))
    return {
        "symbol": prof.symbol,
        "status": status,
        "baseAsset": prof.base_asset,
        "baseAssetPrecision": 8,
        "quoteAsset": prof.quote_asset,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8,
        "quoteCommissionPrecision": 8,
        "orderTypes": [
            "LIMIT",
            "LIMIT_MAKER",
            "MARKET",
            "STOP_LOSS",
            "STOP_LOSS_LIMIT",
            "TAKE_PROFIT",
            "TAKE_PROFIT_LIMIT",
        ],
        "icebergAllowed": True,
        "ocoAllowed": True,
        "otoAllowed": True,
        "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": True,
        "cancelReplaceAllowed": True,
        "amendAllowed": True,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": f(tick),
                "maxPrice": f(dec(1_000_000 * UNIT)),
                "tickSize": f(tick),
            },
            {"filterType": "LOT_SIZE", "minQty": f(step), "maxQty": f(max_qty), "stepSize": f(step)},
            {"filterType": "ICEBERG_PARTS", "limit": 10},
            {
                "filterType": "MARKET_LOT_SIZE",
                "minQty": "0.00000000",
                "maxQty": f(max_qty),
                "stepSize": "0.00000000",
            },
            {
                "filterType": "TRAILING_DELTA",
                "minTrailingAboveDelta": 10,
                "maxTrailingAboveDelta": 2000,
                "minTrailingBelowDelta": 10,
                "maxTrailingBelowDelta": 2000,
            },
            {
                "filterType": "PERCENT_PRICE_BY_SIDE",
                "bidMultiplierUp": "5",
                "bidMultiplierDown": "0.2",
                "askMultiplierUp": "5",
                "askMultiplierDown": "0.2",
                "avgPriceMins": 5,
            },
            {
                "filterType": "NOTIONAL",
                "minNotional": "5.00000000",
                "applyMinToMarket": True,
                "maxNotional": "9000000.00000000",
                "applyMaxToMarket": False,
                "avgPriceMins": 5,
            },
            {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
            {"filterType": "MAX_NUM_ALGO_ORDERS", "maxNumAlgoOrders": 5},
        ],
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH", "DECREMENT"],
    }


def exchange_info(
    profiles: list[SymbolProfile], server_time: int, weight_limit: int, statuses: list[str] | None = None
) -> dict[str, Any]:
    """``statuses``: each profile's (default all ``TRADING``)."""
    status = statuses or ["TRADING"] * len(profiles)
    return {
        "timezone": "UTC",
        "serverTime": server_time,
        "rateLimits": rate_limits(weight_limit),
        "exchangeFilters": [],
        "symbols": [symbol_entry(p, st) for p, st in zip(profiles, status, strict=True)],
    }
