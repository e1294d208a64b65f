"""Whole lines on a container's stdout and stderr, however many threads print.

``print("squaring", x)`` is four writes ("squaring", " ", "7", "\\n"). Inputs of a
sync function run on threads, so two prints at once interleave mid-line and the
logs read ``squaringsquaring  78``. A container's streams are therefore wrapped:
each thread's writes gather until a newline, and its whole lines go out together,
as a terminal's line buffering would have them. A thread's unfinished line goes
out when that thread flushes (``print(..., flush=True)``, a progress bar's
``\\r``) and when the container ends.
"""

from __future__ import annotations

import io
import sys
import threading
from typing import Any, TextIO


class LineWriter(io.TextIOBase):
    """Writes whole lines of each thread to ``stream`` (see the module docstring)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        #: Each thread's unfinished line, by thread id.
        self._partial: dict[int, str] = {}

    def write(self, text: str) -> int:
        thread = threading.get_ident()
        held = self._partial.pop(thread, "") + text
        end = held.rfind("\n") + 1
        if end < len(held):
            self._partial[thread] = held[end:]
        if end:
            with self._lock:
                self._stream.write(held[:end])
                self._stream.flush()
        return len(text)

    def flush(self) -> None:
        held = self._partial.pop(threading.get_ident(), "")
        with self._lock:
            if held:
                self._stream.write(held)
            self._stream.flush()

    def flush_all(self) -> None:
        """Write every thread's unfinished line (the container is ending)."""
        with self._lock:
            for thread in list(self._partial):
                self._stream.write(self._partial.pop(thread, ""))
            self._stream.flush()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self._stream.encoding

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return self._stream.errors

    def __getattr__(self, name: str) -> Any:  # buffer, line_buffering, ...: the stream's
        return getattr(self._stream, name)


def install() -> tuple[LineWriter, LineWriter]:
    """Wrap this process's stdout and stderr; return the wrappers."""
    out, err = LineWriter(sys.stdout), LineWriter(sys.stderr)
    sys.stdout, sys.stderr = out, err
    return out, err
