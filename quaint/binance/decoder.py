"""The hot-path decoder of a live connection's frames (pure): :class:`FrameDecoder`.

It decides exactly as :func:`quaint.binance.parse.frame_from_json` does, knowing in
advance the streams it was made for: their names are checked by one lookup, and an
update of a still-open ``1m`` candle of one of its symbols is recognised without
converting its numbers (:data:`OPEN_KLINE`). ``tests/test_binance_fast_paths.py``
checks that the shortcut never hides what the full parse would decide.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from quaint.binance.errors import ProtocolError
from quaint.binance.models import Event
from quaint.binance.parse import json_object, parse_event, stream_symbol


class OpenKline:
    """:meth:`FrameDecoder.decode`'s answer for a well-formed ``kline_1m`` update of a
    candle still open (``x: false``) of one of its symbols: its numbers were not
    converted (see there). There is one instance, :data:`OPEN_KLINE`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "OPEN_KLINE"


OPEN_KLINE = OpenKline()


class FrameDecoder:
    """Decodes the frames of the streams given (stream names such as ``btcusdt@kline_1m``,
    validated here, once). Frames of other streams decode too, their names validated
    per frame; the streams only make the common case cheaper:

    * a stream or symbol name it knows is checked by one lookup;
    * an update of a still-open ``1m`` candle of one of its symbols gives
      :data:`OPEN_KLINE` after the checks that need no number (the envelope, ``e``, ``s``,
      ``k.s``, ``k.i``, ``k.x``): for consumers that store only closed candles, an open
      candle's numbers are replaced by the next update and never used, and on a busy feed
      converting them would cost as much as everything else together. Everything else
      gets the full parse, which :func:`frame_from_json` also does.

    A decoder never changes after it is made: the same frame always decodes the same.
    """

    __slots__ = ("_streams", "_symbols")

    def __init__(self, streams: Iterable[str] = ()) -> None:
        names: dict[str, str] = {}
        for stream in streams:
            try:
                names[stream] = stream_symbol(stream)
            except ProtocolError:
                raise ValueError(f"not a stream name: {stream!r}") from None
        self._streams: Mapping[str, str] = names
        self._symbols = frozenset(names.values())

    def decode(self, decoded: object, received_at: int) -> Event | OpenKline:
        """Decoded frame JSON -> its event (the envelope checked as
        :func:`frame_from_json` does), or :data:`OPEN_KLINE`."""
        data = json_object(decoded, "frame")
        expected: str | None = None
        if "stream" in data and "data" in data:
            stream = data["stream"]
            expected = self._streams.get(stream) if type(stream) is str else None
            if expected is None:
                expected = stream_symbol(stream)
            data = json_object(data["data"], "data")
        if data.get("e") == "kline" and self._symbols:
            k = data.get("k")
            if type(k) is dict and k.get("x") is False and k.get("i") == "1m":
                symbol = data.get("s")
                if (
                    type(symbol) is str
                    and symbol in self._symbols
                    and k.get("s", symbol) == symbol
                    and (expected is None or symbol == expected)
                ):
                    return OPEN_KLINE
        event = parse_event(data, received_at, self._symbols)
        if expected is not None:
            symbol = getattr(event, "symbol", None)
            if symbol is not None and symbol != expected:
                raise ProtocolError("stream", "symbol differs from the payload's")
        return event
