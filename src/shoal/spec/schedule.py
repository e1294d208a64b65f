"""When scheduled functions fire: ``shoal.Period`` and ``shoal.Cron``, and their next tick.

Both are validated options (frozen dataclasses, checked on construction), and
:func:`next_tick` is a pure function of the schedule, the time the schedule
started and the time now, so tests step time by passing it. Ticks missed while
nothing ran (a stopped server, a blocked loop) are not made up: the next tick
is always the first one after *now*.

Example::

    >>> start = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    >>> next_tick(Period(minutes=5), start, start + timedelta(minutes=7))
    datetime.datetime(2026, 1, 1, 12, 10, tzinfo=datetime.timezone.utc)
    >>> next_tick(Cron("0 9 * * *"), start, start)
    datetime.datetime(2026, 1, 2, 9, 0, tzinfo=datetime.timezone.utc)
"""

from __future__ import annotations

import math
import zoneinfo
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from shoal.exception import InvalidError


@dataclass(frozen=True)
class Period:
    """Fire every ``weeks + days + hours + minutes + seconds``, counted from the app's start.

    ``shoal.Period(hours=1)``; the first run comes one period after the app starts.

    Raises:
        InvalidError: the period is not a positive, finite length of time.
    """

    weeks: float = 0
    days: float = 0
    hours: float = 0
    minutes: float = 0
    seconds: float = 0

    def __post_init__(self) -> None:
        parts = (self.weeks, self.days, self.hours, self.minutes, self.seconds)
        if not all(isinstance(p, int | float) and math.isfinite(p) and p >= 0 for p in parts):
            raise InvalidError(f"{self!r}: every part must be a finite number >= 0")
        if self.length <= 0:
            raise InvalidError(f"{self!r}: the period must be longer than 0 seconds")

    @property
    def length(self) -> float:
        """The period in seconds."""
        return timedelta(
            weeks=self.weeks,
            days=self.days,
            hours=self.hours,
            minutes=self.minutes,
            seconds=self.seconds,
        ).total_seconds()


@dataclass(frozen=True)
class Cron:
    """Fire at the times a cron expression names, in ``timezone`` (an IANA name).

    ``shoal.Cron("*/5 * * * *")``, ``shoal.Cron("0 9 * * 1-5", timezone="Europe/Paris")``.

    Raises:
        InvalidError: the expression or the time zone is not valid.
    """

    cron_string: str
    timezone: str = "UTC"
    _zone: zoneinfo.ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        from croniter import croniter

        if not isinstance(self.cron_string, str) or not croniter.is_valid(self.cron_string):
            raise InvalidError(f"Cron({self.cron_string!r}): not a valid cron expression")
        try:
            zone = zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
            raise InvalidError(f"Cron(timezone={self.timezone!r}): unknown time zone") from None
        object.__setattr__(self, "_zone", zone)


Schedule = Period | Cron


def next_tick(schedule: Schedule, started: datetime, now: datetime) -> datetime:
    """The first time after ``now`` that ``schedule`` fires (an aware datetime, UTC).

    Args:
        schedule: when to fire.
        started: when the schedule began (a ``Period`` counts from it).
        now: the present; the answer is strictly later.
    """
    if isinstance(schedule, Period):
        length = schedule.length
        elapsed = (now - started).total_seconds()
        ticks = max(0, math.floor(elapsed / length)) + 1
        return (started + timedelta(seconds=ticks * length)).astimezone(UTC)
    from croniter import croniter

    local_now = now.astimezone(schedule._zone)
    following: datetime = croniter(schedule.cron_string, local_now).get_next(datetime)
    return following.astimezone(UTC)
