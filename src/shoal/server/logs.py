"""What deployed and ephemeral apps' containers print, kept for ``shoal app logs``.

The local backend relays every line a container writes to the server's own
stdout/stderr (prefixed with the container's label) and to :meth:`Logs.add`.
Each app keeps its last SHOAL_LOG_LINES lines in memory, numbered in one
sequence for the whole server, so a follower asks for "everything after N" and
misses nothing that is still kept. Logs live as long as the server process:
they are not stored (the server's own stdout has everything, for a log
collector to keep).
"""

from __future__ import annotations

import collections
import re
import time
from typing import Any

from shoal import settings

#: A container id as the server's pools make it: ``<app>.v<version>.<function>-c<n>``.
_CONTAINER = re.compile(r"^(?P<app>.+?)\.v\d+\.(?P<function>.+)-c\d+$")


class Logs:
    """The recent output of every app's containers."""

    def __init__(self, keep: int | None = None) -> None:
        self._keep = keep or settings.log_lines()
        self._apps: dict[str, collections.deque[tuple[int, float, str, str, str]]] = {}
        self._next = 1

    def add(self, container_id: str, which: str, lines: list[str]) -> None:
        """Keep ``lines`` that container ``container_id`` wrote to ``which``."""
        found = _CONTAINER.match(container_id)
        if found is None:
            return
        kept = self._apps.get(found["app"])
        if kept is None:
            kept = self._apps[found["app"]] = collections.deque(maxlen=self._keep)
        now = time.time()
        for line in lines:
            kept.append((self._next, now, container_id, which, line))
            self._next += 1

    def has(self, app: str) -> bool:
        return app in self._apps

    def after(self, app: str, seq: int, limit: int = 10_000) -> dict[str, Any]:
        """Up to ``limit`` of ``app``'s lines numbered above ``seq``, oldest first, and the
        number to ask after next time."""
        kept = self._apps.get(app, ())
        rows = [
            {"seq": n, "time": t, "container": c, "stream": w, "text": text}
            for n, t, c, w, text in kept
            if n > seq
        ][:limit]
        return {"lines": rows, "next": rows[-1]["seq"] if rows else max(seq, self._next - 1)}
