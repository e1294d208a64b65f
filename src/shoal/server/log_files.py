"""Each app's container output on disk: JSON lines, rotated by size and count.

``<home>/logs/<app>.log`` gets one JSON object per line written (``time``, ``container``,
``function``, ``stream``, ``text``, and ``input``: the call it was printed for, if any);
past SHOAL_LOG_BYTES it becomes ``<app>.log.1`` (the older ones shift up, and past
SHOAL_LOG_FILES the oldest goes). Writes are buffered and flushed once a second and at
stop, so a burst of output is a few writes, not one per line. What is on disk survives a
server restart: the restarted server reads the newest lines back, and ``shoal app logs
--since/--until/--search/--tail/--input`` reads them all.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from typing import IO, Any


class AppLog:
    """The rotated files of one app."""

    def __init__(self, path: str, max_bytes: int, files: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.files = files
        self._out: IO[str] | None = None
        self._size = 0

    def write(self, row: dict[str, Any]) -> None:
        if self._out is None:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            self._out = open(self.path, "a", encoding="utf-8")  # kept open: lines are many
            self._size = self._out.tell()
        line = json.dumps(row, separators=(",", ":")) + "\n"
        self._out.write(line)
        self._size += len(line)
        if self._size >= self.max_bytes:
            self._rotate()

    def _rotate(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None
        for n in range(self.files - 1, 0, -1):
            older = f"{self.path}.{n}"
            if os.path.exists(older):
                if n + 1 >= self.files:
                    os.unlink(older)
                else:
                    os.replace(older, f"{self.path}.{n + 1}")
        if os.path.exists(self.path):
            if self.files > 1:
                os.replace(self.path, f"{self.path}.1")
            else:
                os.unlink(self.path)
        self._size = 0

    def flush(self) -> None:
        if self._out is not None:
            self._out.flush()

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None

    def rows(self) -> Iterator[dict[str, Any]]:
        """Every line kept on disk, oldest first (what is buffered is flushed first)."""
        self.flush()
        for n in range(self.files - 1, -1, -1):
            path = f"{self.path}.{n}" if n else self.path
            try:
                with open(path, encoding="utf-8") as source:
                    for line in source:
                        try:
                            row = json.loads(line)
                        except ValueError:
                            continue  # a line cut short by a crash
                        if isinstance(row, dict):
                            yield row
            except FileNotFoundError:
                continue


class LogFiles:
    """Every app's :class:`AppLog` under ``root``."""

    def __init__(self, root: str, max_bytes: int, files: int) -> None:
        self.root = root
        self._max_bytes = max_bytes
        self._files = files
        self._apps: dict[str, AppLog] = {}

    def of(self, app: str) -> AppLog:
        found = self._apps.get(app)
        if found is None:
            safe = app.replace("/", "_")
            found = self._apps[app] = AppLog(
                os.path.join(self.root, f"{safe}.log"), self._max_bytes, self._files
            )
        return found

    def apps(self) -> list[str]:
        """The apps with a log on disk."""
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return []
        return sorted(name.removesuffix(".log") for name in names if name.endswith(".log"))

    def flush(self) -> None:
        for log in self._apps.values():
            log.flush()

    def close(self) -> None:
        for log in self._apps.values():
            log.close()


def matching(
    rows: Iterator[dict[str, Any]],
    since: float | None = None,
    until: float | None = None,
    search: str = "",
    function: str = "",
    container: str = "",
    input: str = "",
) -> Iterator[dict[str, Any]]:
    """The rows within the time range that contain ``search`` and are of ``function``,
    ``container`` and the call ``input`` (each filter only when given)."""
    tests: list[Callable[[dict[str, Any]], bool]] = []
    if since is not None:
        tests.append(lambda row: row.get("time", 0) >= since)
    if until is not None:
        tests.append(lambda row: row.get("time", 0) <= until)
    if search:
        tests.append(lambda row: search in str(row.get("text", "")))
    if function:
        tests.append(lambda row: row.get("function") == function)
    if container:
        tests.append(lambda row: str(row.get("container", "")).endswith(container))
    if input:
        tests.append(lambda row: row.get("input") == input)
    for row in rows:
        if all(test(row) for test in tests):
            yield row
