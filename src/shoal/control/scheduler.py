"""Fires scheduled functions: one timer per schedule, one input per tick.

The control plane owns a :class:`Scheduler`; each function declared with
``schedule=`` gets a timer on the control loop for its next tick
(:func:`~shoal.spec.schedule.next_tick`). At the tick the function gets one
input with no arguments, through its pool like any other (retries, timeouts and
container logs included), and the timer is set for the tick after *now*, so a
loop that was stalled does not fire a burst of missed runs. A run's failure is
reported on stderr; the schedule goes on.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from datetime import UTC, datetime

from shoal import log
from shoal.control.calls import CallState, InputRecord
from shoal.control.pool import Pool
from shoal.protocol import payload
from shoal.spec.schedule import Schedule, next_tick

#: The pickled arguments of a scheduled run: no positional, no keyword arguments.
_NO_ARGS = payload.dumps(((), {}), "arguments")


class Scheduler:
    """The timers of a control plane's scheduled functions.

    Args:
        wall_clock: the time now, as an aware datetime (a test may step it).
    """

    def __init__(self, wall_clock: Callable[[], datetime] | None = None) -> None:
        self._now = wall_clock or (lambda: datetime.now(UTC))
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def add(self, key: str, pool: Pool, schedule: Schedule) -> None:
        """Fire ``pool``'s function on ``schedule`` from now on (counted from now)."""
        if key not in self._timers:
            self._arm(key, pool, schedule, self._now())

    def remove(self, key: str) -> None:
        """Stop firing the pool under ``key``."""
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    def _arm(self, key: str, pool: Pool, schedule: Schedule, started: datetime) -> None:
        now = self._now()
        delay = (next_tick(schedule, started, now) - now).total_seconds()
        loop = asyncio.get_running_loop()
        self._timers[key] = loop.call_later(
            max(0.0, delay), self._fire, key, pool, schedule, started
        )

    def _fire(self, key: str, pool: Pool, schedule: Schedule, started: datetime) -> None:
        name = pool.spec.name
        try:
            pool.submit(_NO_ARGS, functools.partial(_report, name))
        except Exception as exc:  # the pool is stopping: nothing more to fire
            log.say(
                f"shoal: scheduled run of {name} not started: {exc}",
                component="scheduler",
                level="error",
            )
            return
        self._arm(key, pool, schedule, started)

    def stop(self) -> None:
        """Cancel every timer."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()


def _report(name: str, record: InputRecord) -> None:
    if record.state is CallState.FAILED:
        log.say(
            f"shoal: scheduled run of {name} failed: {record.error!r}",
            component="scheduler",
            level="error",
        )
