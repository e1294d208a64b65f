"""What deployed and ephemeral apps' containers print, kept for ``shoal app logs``.

The local backend relays every line a container writes to the server's own
stdout/stderr (prefixed with the container's label) and to :meth:`Logs.add`.
Each app keeps its last SHOAL_LOG_LINES lines in memory, numbered in one
sequence for the whole server, so a follower asks for "everything after N" and
misses nothing that is still kept. A line's cursor is ``<epoch>-<N>``, the epoch
being when this server started (ns): a follower that comes back to a restarted
server, whose numbers start again at 1, is told so and gets every line the new
server has (all of them written after the old one's last). Beside what containers
write, each container's start and stop is a line of stream ``shoal`` (when it was
ready, and why it stopped), so ``shoal app logs`` tells why a container went.
Everything comes from the control plane's event bus. A server also writes every line
to its home, per app, rotated by size and count (:mod:`shoal.server.log_files`), reads
the newest back when it restarts, and searches them all (``--since``, ``--until``,
``--search``, ``--function``, ``--container``, ``--tail``). A watcher (the client that
runs an ephemeral app) hears each line of its app as it is added.
"""

from __future__ import annotations

import collections
import itertools
import re
import time
from collections.abc import Callable, Iterable
from typing import Any

from shoal import settings
from shoal.exception import InvalidError
from shoal.server.log_files import LogFiles, matching
from shoal.spec.events import ContainerOutput, ContainerReady, ContainerStopped

#: The streams containers write (Shoal's own lines are stream "shoal").
_WRITTEN = ("stdout", "stderr")
#: The events the logs keep lines of.
LOGGED = (ContainerOutput, ContainerReady, ContainerStopped)

#: A container id as the server's pools make it: ``<app>.v<version>.<function>-c<n>``.
_CONTAINER = re.compile(r"^(?P<app>.+?)\.v\d+\.(?P<label>(?P<function>.+)-c\d+)$")

#: One kept line: (number, time, container, stream, text, call id or "").
_Line = tuple[int, float, str, str, str, str]

#: Hears ``(label, stream, lines)``: what one container (``<function>-c<n>``) wrote.
Watcher = Callable[[str, str, list[str]], None]


class Logs:
    """The recent output of every app's containers."""

    def __init__(self, keep: int | None = None, files: LogFiles | None = None) -> None:
        self._keep = keep or settings.log_lines()
        #: Each app's kept lines: (number, time, container, stream, text, call id or "").
        self._apps: dict[str, collections.deque[_Line]] = {}
        self._next = 1
        self._watchers: dict[str, list[Watcher]] = {}
        #: Names this server start in cursors (distinct from any earlier start's).
        self.epoch = time.time_ns()
        #: Where every line is also written (None: nowhere, as for an embedded server).
        self._files = files
        if files is not None:
            for app in files.apps():
                kept = self._apps[app] = collections.deque(maxlen=self._keep)
                for row in collections.deque(files.of(app).rows(), maxlen=self._keep):
                    kept.append(
                        (
                            self._next,
                            row.get("time", 0.0),
                            str(row.get("container", "")),
                            str(row.get("stream", "")),
                            str(row.get("text", "")),
                            str(row.get("input", "")),
                        )
                    )
                    self._next += 1
        #: The last line read back from disk: a follower from an earlier start had those.
        self._restored = self._next - 1

    def watch(self, app: str, watcher: Watcher) -> Callable[[], None]:
        """Hand ``watcher`` every line ``app``'s containers write from now on, after the
        lines already kept; the function returned stops it."""
        kept = [(c, w, text) for _, _, c, w, text, _ in self._apps.get(app, ()) if w in _WRITTEN]
        for (container, which), run in itertools.groupby(kept, lambda row: row[:2]):
            found = _CONTAINER.match(container)
            assert found is not None  # kept only when it matched
            watcher(found["label"], which, [text for _, _, text in run])
        self._watchers.setdefault(app, []).append(watcher)

        def stop() -> None:
            watchers = self._watchers.get(app, [])
            if watcher in watchers:
                watchers.remove(watcher)
            if not watchers:
                self._watchers.pop(app, None)

        return stop

    def hear(self, event: ContainerOutput | ContainerReady | ContainerStopped) -> None:
        """Keep the lines an event of :data:`LOGGED` stands for."""
        if isinstance(event, ContainerOutput):
            self.add(event.container_id, event.stream, event.lines, event.inputs)
        elif isinstance(event, ContainerReady):
            self.add(event.container_id, "shoal", [f"ready after {event.startup * 1000:.0f} ms"])
        else:
            self.add(
                event.container_id,
                "shoal",
                [f"stopped ({event.reason}): {event.detail}, after {event.lifetime:.1f} s"],
            )

    def add(
        self, container_id: str, which: str, lines: list[str], inputs: list[str] | None = None
    ) -> None:
        """Keep ``lines`` that container ``container_id`` wrote to ``which`` (each printed
        for the call in ``inputs`` beside it, when given; "" for none)."""
        found = _CONTAINER.match(container_id)
        if found is None:
            return
        app = found["app"]
        kept = self._apps.get(app)
        if kept is None:
            kept = self._apps[app] = collections.deque(maxlen=self._keep)
        now = time.time()
        ids: Iterable[str] = inputs if inputs is not None else itertools.repeat("")
        for line, call in zip(lines, ids, strict=False):
            kept.append((self._next, now, container_id, which, line, call))
            self._next += 1
        if self._files is not None:
            log = self._files.of(app)
            function = found["function"]
            for line, call in zip(lines, ids, strict=False):
                row = {
                    "time": now,
                    "container": container_id,
                    "function": function,
                    "stream": which,
                    "text": line,
                }
                if call:
                    row["input"] = call
                log.write(row)
        if which not in _WRITTEN:
            return  # a watcher's client prints what containers wrote, not Shoal's own lines
        for watcher in list(self._watchers.get(app, ())):
            watcher(found["label"], which, lines)

    def has(self, app: str) -> bool:
        return app in self._apps

    def flush(self) -> None:
        """Write what is buffered for the files."""
        if self._files is not None:
            self._files.flush()

    def close(self) -> None:
        if self._files is not None:
            self._files.close()

    def search(self, app: str, tail: int | None = None, **filters: Any) -> dict[str, Any]:
        """``app``'s lines that pass ``filters`` (see :func:`log_files.matching`), from
        its files (all of them) when it has files, else from memory; the last ``tail``
        of them when given; with the cursor to follow on from."""
        if self._files is not None:
            rows: Any = self._files.of(app).rows()
        else:
            rows = (
                {
                    "time": t,
                    "container": c,
                    "stream": w,
                    "text": text,
                    "function": _function_of(c),
                    "input": call,
                }
                for _, t, c, w, text, call in self._apps.get(app, ())
            )
        found = list(matching(rows, **filters))
        if tail is not None:
            found = found[-tail:] if tail else []
        last = self._next - 1
        return {
            "lines": [
                {
                    "time": r.get("time", 0.0),
                    "container": r.get("container", ""),
                    "stream": r.get("stream", ""),
                    "text": r.get("text", ""),
                    "input": r.get("input", ""),
                }
                for r in found[-10_000:]
            ],
            "next": last,
            "cursor": f"{self.epoch}-{last}",
            "restarted": False,
        }

    def after(self, app: str, cursor: str | int = "", limit: int = 10_000) -> dict[str, Any]:
        """Up to ``limit`` of ``app``'s lines after ``cursor`` (a line's ``cursor``, or
        this server's bare number; empty: all kept), oldest first, with the cursor to
        ask after next time and whether ``cursor`` came from another server start.

        Raises:
            InvalidError: ``cursor`` is neither.
        """
        seq, restarted = self._position(cursor)
        kept = self._apps.get(app, ())
        rows = [
            {
                "seq": n,
                "cursor": f"{self.epoch}-{n}",
                "time": t,
                "container": c,
                "stream": w,
                "text": text,
                "input": call,
            }
            for n, t, c, w, text, call in kept
            if n > seq
        ][:limit]
        last = rows[-1]["seq"] if rows else max(seq, self._next - 1)
        return {
            "lines": rows,
            "next": last,
            "cursor": f"{self.epoch}-{last}",
            "restarted": restarted,
        }

    def filtered(self, answer: dict[str, Any], **filters: Any) -> dict[str, Any]:
        """``answer`` (of :meth:`after`) with only the lines that pass ``filters``."""
        rows = ({**row, "function": _function_of(row["container"])} for row in answer["lines"])
        return {**answer, "lines": [r for r in matching(rows, **filters)]}

    def _position(self, cursor: str | int) -> tuple[int, bool]:
        """The number in this server's sequence that ``cursor`` stands for, and whether
        it was another server start's (then: every line this start wrote is newer; the
        ones it read back from disk the follower had)."""
        if isinstance(cursor, int):
            return cursor, False
        if not cursor:
            return 0, False
        epoch, _, seq = cursor.partition("-")
        if not (epoch.isdigit() and seq.isdigit()):
            raise InvalidError(f"cursor {cursor!r}: expected <epoch>-<number>, as a line's")
        if int(epoch) != self.epoch:
            return self._restored, True  # it saw the lines read back from disk already
        return int(seq), False


def _function_of(container_id: str) -> str:
    found = _CONTAINER.match(container_id)
    return found["function"] if found else ""
