"""Binance spot market-data protocol: models, pure parsers and encoders."""
