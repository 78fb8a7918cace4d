"""Errors raised by the protocol parsers."""

from __future__ import annotations


class ProtocolError(ValueError):
    """A payload that does not follow Binance's documented shape.

    ``field`` names the offending key path so logs and API answers can say exactly
    what was wrong without echoing the whole (possibly huge) payload.
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
