"""The live status of a running app: one line per function, a bar per map.

``shoal run`` shows it by default; a script shows it for ``app.run()`` blocks
inside ``with shoal.enable_output():``, as Modal's does. It is drawn on a
terminal only (logs and pipes get the containers' output alone) and cleared
when it ends, so nothing that follows is glued to its last line. It renders on
rich's refresh thread and only reads counts, so it never slows the calls it
reports on.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from shoal.exception import Error

if TYPE_CHECKING:
    from shoal.client.app import App

_lock = threading.Lock()
_enabled = 0  # enable_output blocks open now


@contextlib.contextmanager
def enable_output(show_progress: bool = True) -> Iterator[None]:
    """Show the live status of every ``app.run()`` inside the block (on a terminal).

    ``show_progress=False`` keeps it off, as Modal's argument does. The containers'
    output is relayed either way.
    """
    global _enabled
    with _lock:
        _enabled += int(show_progress)
    try:
        yield
    finally:
        with _lock:
            _enabled -= int(show_progress)


def output_enabled() -> bool:
    """Whether an :func:`enable_output` block is open."""
    return _enabled > 0


def live_status(app: App, console: Console | None = None) -> contextlib.AbstractContextManager[Any]:
    """The status display of ``app`` for a ``with`` block, on a terminal only."""
    console = console or Console(stderr=True)
    if not console.is_terminal:
        return contextlib.nullcontext()
    return Live(Status(app), console=console, refresh_per_second=4, transient=True)


#: Maps with fewer inputs than this get no progress bar.
MIN_INPUTS_FOR_BAR = 20


class Status:
    """A rich renderable of an app's pools and maps, rebuilt on every refresh."""

    def __init__(self, app: App) -> None:
        self._app = app

    def __rich__(self) -> RenderableType:
        table = Table.grid(padding=(0, 2))
        for name, function in self._app.registered_functions.items():
            try:
                stats = function.stats()
            except Error:
                continue
            table.add_row(
                Text(name, style="bold"),
                f"containers {stats.containers} ({stats.ready} ready)",
                f"queued {stats.queued}",
                f"running {stats.running}",
            )
        rows: list[RenderableType] = [table]
        for progress in self._app.progress():
            if progress.total is None:
                rows.append(Text(f"{progress.label}.map: {progress.done} done"))
            elif progress.total >= MIN_INPUTS_FOR_BAR:
                bar = Table.grid(padding=(0, 1))
                bar.add_row(
                    Text(f"{progress.label}.map"),
                    ProgressBar(total=progress.total, completed=progress.done, width=40),
                    Text(f"{progress.done}/{progress.total}"),
                )
                rows.append(bar)
        return Group(*rows)


def print_lines(source: str, stream: str, lines: list[str]) -> None:
    """Show lines a server relayed from an app's container (``[<function>-c<n>] ...``, on
    the stream it wrote to) or from an image build (``source`` empty: as they are), as
    a container of this process's own would show them."""
    # Looked up per write: the live status may have replaced sys.stdout.
    out: TextIO = sys.stderr if stream == "stderr" else sys.stdout
    prefix = f"[{source}] " if source else ""
    with contextlib.suppress(ValueError, OSError):  # closed at interpreter exit
        out.write("".join(f"{prefix}{line}\n" for line in lines))
        out.flush()
