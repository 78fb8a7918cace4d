"""A status line on a terminal that log lines do not overwrite (the CLI's progress bar).

The bar is redrawn in place (``\\r``) on one stream, the log goes to another (stdout and
stderr, both the same terminal): a log line written while the bar is shown would land
after the bar's text, and the next redraw would overwrite the log line's start. Log
lines go through :meth:`StatusLine.above`, which clears the bar's line first, writes the
complete log lines, and draws the bar again below them.
"""

from __future__ import annotations

import io
from typing import TextIO, cast

# Back to the line's start, erase to its end.
CLEAR = "\r\x1b[K"


class StatusLine:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.text = ""  # what is shown now ("" when nothing is)

    def show(self, text: str) -> None:
        self.text = text.lstrip("\r")
        self.out.write(CLEAR + self.text)
        self.out.flush()

    def finish(self) -> None:
        """Leave the last text on its line; what follows starts below it."""
        if self.text:
            self.out.write("\n")
            self.out.flush()
        self.text = ""

    def above(self, stream: TextIO) -> TextIO:
        """``stream`` for log lines that pass above the status line."""
        # A TextIOBase has all that a log stream needs (write, flush, isatty).
        return cast(TextIO, _Above(self, stream))


class _Above(io.TextIOBase):
    def __init__(self, line: StatusLine, stream: TextIO) -> None:
        super().__init__()
        self._line = line
        self._stream = stream
        self._pending = ""  # a log line is written in pieces (print: text, then "\n")

    def write(self, s: str) -> int:
        self._pending += s
        if "\n" in self._pending:
            complete, _, self._pending = self._pending.rpartition("\n")
            shown = self._line.text
            if shown:
                self._line.out.write(CLEAR)
                self._line.out.flush()
            self._stream.write(complete + "\n")
            self._stream.flush()
            if shown:
                self._line.out.write(shown)
                self._line.out.flush()
        return len(s)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()

    def writable(self) -> bool:
        return True
