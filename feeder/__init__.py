"""The feeder service: Binance spot 1m candles and best bid/ask into TimescaleDB.

Sans-I/O cores (``router``, ``accumulator``, ``gaps``, ``watchdog``, ``connections``,
``features``, ``health``, ``events``) decide; thin shells (``stream``, ``writer``,
``feature_task``, ``service``) move bytes. ``python -m feeder`` runs it.
"""
