"""Whole lines on a container's stdout and stderr, however many threads print.

``print("squaring", x)`` is four writes ("squaring", " ", "7", "\\n"). Inputs of a
sync function run on threads, so two prints at once interleave mid-line and the
logs read ``squaringsquaring  78``. A container's streams are therefore wrapped:
each thread's writes gather until a newline, and its whole lines go out together,
as a terminal's line buffering would have them. A thread's unfinished line goes
out when that thread flushes (``print(..., flush=True)``, a progress bar's
``\\r``) and when the container ends.

Lines printed while an input runs are marked as that input's (see
:mod:`shoal.spec.log_line`); the input comes from the context, so asyncio tasks
sharing one thread are told apart as threads are, and so are their unfinished lines.
"""

from __future__ import annotations

import io
import sys
import threading
from typing import Any, TextIO

from shoal.context import current_call
from shoal.spec.log_line import marked


class LineWriter(io.TextIOBase):
    """Writes whole lines of each thread to ``stream`` (see the module docstring)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        #: Each writer's unfinished line, by thread id and the input it runs.
        self._partial: dict[tuple[int, str | None], str] = {}

    def write(self, text: str) -> int:
        call = current_call.get()
        writer = (threading.get_ident(), call)
        held = self._partial.pop(writer, "") + text
        end = held.rfind("\n") + 1
        if end < len(held):
            self._partial[writer] = held[end:]
        if end:
            whole = held[:end] if call is None else marked(call, held[:end])
            with self._lock:
                self._stream.write(whole)
                self._stream.flush()
        return len(text)

    def flush(self) -> None:
        call = current_call.get()
        held = self._partial.pop((threading.get_ident(), call), "")
        with self._lock:
            if held:
                self._stream.write(held if call is None else marked(call, held + "\n"))
            self._stream.flush()

    def flush_all(self) -> None:
        """Write every thread's unfinished line (the container is ending)."""
        with self._lock:
            for writer in list(self._partial):
                held = self._partial.pop(writer, "")
                call = writer[1]
                self._stream.write(held if call is None else marked(call, held + "\n"))
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
