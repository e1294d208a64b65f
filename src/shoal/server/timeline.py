"""What the dashboard plots: one point a second for each function, kept 15 minutes.

A :class:`Timeline` subscribes to the control plane's event bus and adds up what it
hears between two ticks: inputs ended by outcome, their queue waits and run times
(the bus hands them over in batches: one ``extend`` per batch), failures with their
tracebacks, and inputs run per container. Once a second, :meth:`Timeline.tick`
samples each live pool (containers by state, queued and running inputs), turns the
second's waits into p50/p99, appends one point per function and hands the new points
to whoever listens (the dashboard's live stream). The work per tick is O(functions
+ containers), never O(inputs): a point is the same size at 1 input a second and at
20,000.

A marker is kept each time a function's scaling settings change (``update_autoscaler``),
found by comparing each pool's settings once a tick, so nothing is added to the path
that changes them.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import time
from collections.abc import Callable
from typing import Any, Final

from shoal.control.events import EventBus
from shoal.control.pool import Pool
from shoal.spec.events import (
    ContainerStarting,
    ContainerStopped,
    InputCancelled,
    InputFailed,
    InputsFinished,
)

#: Points kept per function: 15 minutes at one a second.
SPAN: Final = 900
#: Failures kept per function, newest last.
FAILURES: Final = 20
#: Queue waits and run times kept per function per second for its percentiles; past
#: this, the rest of that second's are counted but not ranked.
SAMPLE: Final = 2_000
#: The outcomes a point counts, by the status Prometheus' ``shoal_inputs_total`` uses.
OUTCOMES: Final = ("success", "failure", "timeout", "crash", "init_failure", "cancelled")
_STATUS: Final = {
    "FunctionTimeoutError": "timeout",
    "ContainerCrashError": "crash",
    "ContainerInitError": "init_failure",
}
#: Container states a point counts (a ready container is busy or idle).
STATES: Final = ("starting", "idle", "busy", "draining")


class _Second:
    """What one function did since the last tick."""

    __slots__ = ("outcomes", "runs", "waits")

    def __init__(self) -> None:
        self.outcomes: collections.Counter[str] = collections.Counter()
        self.waits: list[float] = []
        self.runs: list[float] = []


class _Function:
    """Everything kept for one pool key."""

    def __init__(self) -> None:
        self.points: collections.deque[dict[str, Any]] = collections.deque(maxlen=SPAN)
        self.now = _Second()
        self.failures: collections.deque[dict[str, Any]] = collections.deque(maxlen=FAILURES)
        self.markers: collections.deque[dict[str, Any]] = collections.deque(maxlen=SPAN)
        self.scaling: dict[str, Any] | None = None
        #: When its pool was last live (a tick's time).
        self.seen = 0.0


class Timeline:
    """Per-function history for the dashboard, fed by ``events``; ``pools`` gives the
    live pools by key, ``clock`` the wall time points are stamped with."""

    def __init__(
        self,
        events: EventBus,
        pools: Callable[[], dict[str, Pool]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._pools = pools
        self._clock = clock
        self._functions: dict[str, _Function] = {}
        #: Inputs each live container finished, and when it started (wall time).
        self._ran: collections.Counter[str] = collections.Counter()
        self._started: dict[str, float] = {}
        #: Called with each tick's points, by key (the live stream's listeners).
        self._listeners: set[Callable[[float, dict[str, dict[str, Any]]], None]] = set()
        self.unsubscribe = events.subscribe(
            self._hear,
            InputsFinished,
            InputFailed,
            InputCancelled,
            ContainerStarting,
            ContainerStopped,
        )

    def _of(self, key: str) -> _Function:
        found = self._functions.get(key)
        if found is None:
            found = self._functions[key] = _Function()
        return found

    def _hear(self, event: Any) -> None:
        if isinstance(event, InputsFinished):
            second = self._of(event.function).now
            second.outcomes["success"] += len(event.input_ids)
            if len(second.waits) < SAMPLE:
                second.waits.extend(event.queue_waits)
                second.runs.extend(event.run_times)
            self._ran[event.container_id] += len(event.input_ids)
        elif isinstance(event, InputFailed):
            kept = self._of(event.function)
            kept.now.outcomes[_STATUS.get(event.error_type, "failure")] += 1
            kept.failures.append(
                {
                    "at": self._clock(),
                    "input_id": event.input_id,
                    "container_id": event.container_id or "",
                    "type": event.error_type,
                    "message": event.message,
                    "traceback": event.traceback,
                }
            )
        elif isinstance(event, InputCancelled):
            self._of(event.function).now.outcomes["cancelled"] += 1
        elif isinstance(event, ContainerStarting):
            self._started[event.container_id] = self._clock()
        elif isinstance(event, ContainerStopped):
            self._started.pop(event.container_id, None)
            self._ran.pop(event.container_id, None)

    def listen(
        self, listener: Callable[[float, dict[str, dict[str, Any]]], None]
    ) -> Callable[[], None]:
        """Hand ``listener`` each tick's time and new points; the function returned stops it."""
        self._listeners.add(listener)
        return lambda: self._listeners.discard(listener)

    def tick(self) -> dict[str, dict[str, Any]]:
        """Sample every live pool, append a point to each function's history and hand
        the new points to the listeners; returns them by key."""
        now = self._clock()
        points: dict[str, dict[str, Any]] = {}
        for key, pool in self._pools().items():
            kept = self._of(key)
            point = self._sample(pool, kept.now, now)
            kept.now = _Second()
            kept.points.append(point)
            points[key] = point
            scaling = dataclasses.asdict(pool.spec.scaling)
            if kept.scaling is not None and scaling != kept.scaling:
                kept.markers.append({"t": now, "scaling": scaling})
            kept.scaling = scaling
            kept.seen = now
        # A pool gone (its app stopped or redeployed) keeps its history for a plot's
        # span, then is dropped: redeploys must not grow the server.
        gone = [k for k, f in self._functions.items() if k not in points and now - f.seen > SPAN]
        for key in gone:
            del self._functions[key]
        for listener in list(self._listeners):
            listener(now, points)
        return points

    @staticmethod
    def _sample(pool: Pool, second: _Second, now: float) -> dict[str, Any]:
        stats = pool.stats()
        states = dict.fromkeys(STATES, 0)
        for container in pool.containers():
            state = container["state"]
            if state == "ready":
                state = "busy" if container["running"] else "idle"
            if state in states:
                states[state] += 1
        waits, runs = _quantiles(second.waits), _quantiles(second.runs)
        return {
            "t": now,
            **states,
            "queued": stats.queued,
            "running": stats.running,
            **{outcome: second.outcomes[outcome] for outcome in OUTCOMES},
            "wait_p50": waits[0],
            "wait_p99": waits[1],
            "run_p50": runs[0],
            "run_p99": runs[1],
        }

    def history(self, key: str) -> dict[str, Any]:
        """``key``'s points (oldest first), scaling markers and recent failures."""
        kept = self._functions.get(key)
        if kept is None:
            return {"points": [], "markers": [], "failures": []}
        return {
            "points": list(kept.points),
            "markers": list(kept.markers),
            "failures": list(kept.failures),
        }

    def containers(self, pool: Pool) -> list[dict[str, Any]]:
        """``pool``'s live containers, each with its inputs run and uptime, and the CPU
        seconds and resident memory of its process where it runs on this machine."""
        now = self._clock()
        rows = []
        for row in pool.containers():
            started = self._started.get(row["id"])
            usage = process_usage(row["pid"]) if row.get("pid") and not row.get("node") else None
            rows.append(
                {
                    **row,
                    "inputs": self._ran[row["id"]],
                    "uptime": None if started is None else now - started,
                    "cpu_seconds": None if usage is None else usage[0],
                    "memory_bytes": None if usage is None else usage[1],
                }
            )
        return rows


def _quantiles(values: list[float]) -> tuple[float | None, float | None]:
    """p50 and p99 of ``values`` (None for none), by rank."""
    if not values:
        return None, None
    ranked = sorted(values)
    last = len(ranked) - 1
    return ranked[round(0.50 * last)], ranked[round(0.99 * last)]


_TICKS: Final = os.sysconf("SC_CLK_TCK")  # /proc counts CPU time in these a second
_PAGE: Final = os.sysconf("SC_PAGE_SIZE")


def process_usage(pid: int) -> tuple[float, int] | None:
    """CPU seconds (user + system) and resident bytes of process ``pid``, or None when
    it is not there to read."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open(f"/proc/{pid}/statm", encoding="ascii") as f:
            resident = int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS, resident * _PAGE
