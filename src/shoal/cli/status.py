"""The live status shown while ``shoal run`` works: one line per function, a bar per map.

Renders on rich's refresh thread; it only reads counts, so it never slows the
calls it reports on. When the output is not a terminal, rich prints the final
frame once at the end instead of animating.
"""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from shoal.client.app import App
from shoal.exception import Error

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
