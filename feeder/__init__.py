"""The feeder service: Binance spot 1m candles and best bid/ask into TimescaleDB.

The sans-I/O cores in :mod:`feeder.core` (``router``, ``accumulator``, ``gaps``,
``watchdog``, ``connections``, ``reconnect``, ``features``, ``health``, ``events``)
decide; the shells here (``stream``, ``writer``, ``feature_task``, ``service``,
``metrics``) move bytes and act on what the cores decided. ``python -m feeder`` runs it.
"""
