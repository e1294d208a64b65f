"""Each function's recorded traffic, on disk, for ``shoal simulate``.

A :class:`Recorder` subscribes to the control plane's event bus and keeps, per
``(app, function)`` (every version adds to the same recording):

- each input that ended: when it arrived, how long it waited in the queue and how long
  it ran (wall-clock seconds);
- each container that ended: when it started, when it stopped, and how long it took to
  be ready (None when it never was).

Both are rings of fixed-size records in ``<home>/recordings/<app>/<function>.*.ring``
(SHOAL_RECORD_LIMIT records each, the newest kept), so a recording never outgrows its
cap and survives a server restart. What the bus hands over is buffered in memory and
written once a second (:meth:`Recorder.flush`), one write per file, never per input.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from shoal.control.events import EventBus
from shoal.spec.events import (
    ContainerReady,
    ContainerStopped,
    InputFailed,
    InputsFinished,
)

#: A ring file's header: magic, record size, capacity, records written in all.
_HEADER: Final = struct.Struct("<4sIIQ")
_MAGIC: Final = b"SHRR"
#: An input: arrived (wall seconds), queue wait, run time.
INPUT: Final = struct.Struct("<dff")
#: A container: started (wall seconds), lifetime, startup (-1: never ready).
CONTAINER: Final = struct.Struct("<dff")


class Ring:
    """A file of at most ``capacity`` records of ``record`` size, the newest kept."""

    def __init__(self, path: str, record: struct.Struct, capacity: int) -> None:
        self.path = path
        self.record = record
        self.capacity = capacity

    def append(self, rows: Sequence[tuple[float, ...]]) -> None:
        """Write ``rows`` after the ones kept (overwriting the oldest past the cap)."""
        if not rows:
            return
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        size, cap = self.record.size, self.capacity
        with open(self.path, "r+b" if os.path.exists(self.path) else "w+b") as f:
            header = f.read(_HEADER.size)
            written = 0
            if len(header) == _HEADER.size:
                magic, kept_size, kept_cap, written = _HEADER.unpack(header)
                if magic != _MAGIC or kept_size != size or kept_cap != cap:
                    f.truncate(0)  # another format or capacity: start again
                    written = 0
            rows = rows[-cap:]
            data = [self.record.pack(*row) for row in rows]
            start = written % cap
            first = min(len(data), cap - start)
            f.seek(_HEADER.size + start * size)
            f.write(b"".join(data[:first]))
            if first < len(data):
                f.seek(_HEADER.size)
                f.write(b"".join(data[first:]))
            f.seek(0)
            f.write(_HEADER.pack(_MAGIC, size, cap, written + len(data)))

    def read(self) -> list[tuple[Any, ...]]:
        """Every record kept, oldest first."""
        try:
            with open(self.path, "rb") as f:
                header = f.read(_HEADER.size)
                if len(header) < _HEADER.size:
                    return []
                magic, size, cap, written = _HEADER.unpack(header)
                if magic != _MAGIC or size != self.record.size:
                    return []
                body = f.read(size * min(written, cap))
        except FileNotFoundError:
            return []
        rows = list(self.record.iter_unpack(body[: len(body) // size * size]))
        if written > cap:
            start = written % cap
            rows = rows[start:] + rows[:start]
        return rows


@dataclass
class Recording:
    """What was recorded of one function: inputs ``(arrived, wait, run)`` and containers
    ``(started, lifetime, startup)``, oldest first."""

    inputs: list[tuple[float, float, float]]
    containers: list[tuple[float, float, float]]

    def since(self, start: float) -> Recording:
        """The part of it from wall time ``start`` on."""
        return Recording(
            [row for row in self.inputs if row[0] >= start],
            [row for row in self.containers if row[0] + row[1] >= start],
        )


class Recorder:
    """Records every function's traffic under ``root`` (see the module docstring);
    ``name_of`` turns a pool key into ``(app, function)``."""

    def __init__(
        self,
        events: EventBus,
        root: str,
        capacity: int,
        name_of: Callable[[str], tuple[str, str]],
        wall: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._root = root
        self._capacity = capacity
        self._name_of = name_of
        self._wall = wall
        self._clock = clock
        self._inputs: dict[str, list[tuple[float, float, float]]] = {}
        self._containers: dict[str, list[tuple[float, float, float]]] = {}
        self._ready: dict[str, float] = {}  # container id -> startup seconds
        self.unsubscribe = events.subscribe(
            self._hear, InputsFinished, InputFailed, ContainerReady, ContainerStopped
        )

    def _hear(self, event: Any) -> None:
        if isinstance(event, InputsFinished):
            shift = self._wall() - self._clock()  # the bus's times are the pool's clock
            rows = self._inputs.setdefault(event.function, [])
            for wait, run in zip(event.queue_waits, event.run_times, strict=True):
                rows.append((event.at + shift - run - wait, wait, run))
        elif isinstance(event, InputFailed):
            shift = self._wall() - self._clock()
            arrived = event.at + shift - event.run_time - event.queue_wait
            self._inputs.setdefault(event.function, []).append(
                (arrived, event.queue_wait, event.run_time)
            )
        elif isinstance(event, ContainerReady):
            self._ready[event.container_id] = event.startup
        elif isinstance(event, ContainerStopped):
            shift = self._wall() - self._clock()
            startup = self._ready.pop(event.container_id, -1.0)
            started = event.at + shift - event.lifetime
            self._containers.setdefault(event.function, []).append(
                (started, event.lifetime, startup)
            )

    def flush(self) -> None:
        """Write what was heard since the last flush."""
        inputs, self._inputs = self._inputs, {}
        containers, self._containers = self._containers, {}
        for key, rows in inputs.items():
            self._ring(key, "inputs", INPUT).append(rows)
        for key, rows in containers.items():
            self._ring(key, "containers", CONTAINER).append(rows)

    def recording(self, app: str, function: str) -> Recording:
        """What is kept of ``app``'s ``function`` (after a flush)."""
        self.flush()
        inputs = Ring(self._path(app, function, "inputs"), INPUT, self._capacity).read()
        containers = Ring(self._path(app, function, "containers"), CONTAINER, self._capacity)
        return Recording(inputs, containers.read())

    def _ring(self, key: str, kind: str, record: struct.Struct) -> Ring:
        app, function = self._name_of(key)
        return Ring(self._path(app or "_", function, kind), record, self._capacity)

    def _path(self, app: str, function: str, kind: str) -> str:
        safe = function.replace("/", "_")
        return os.path.join(self._root, app.replace("/", "_"), f"{safe}.{kind}.ring")
