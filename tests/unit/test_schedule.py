"""The schedule policy: next ticks of Period and Cron, stepped with explicit times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

import shoal
from shoal.exception import InvalidError
from shoal.spec.schedule import Cron, Period, next_tick

START = datetime(2026, 3, 28, 12, 0, 0, tzinfo=UTC)  # a Saturday, the eve of a DST change


def test_a_period_ticks_from_its_start_and_never_makes_up_missed_ticks() -> None:
    every_5 = Period(minutes=5)
    assert next_tick(every_5, START, START) == START + timedelta(minutes=5)
    assert next_tick(every_5, START, START + timedelta(minutes=4, seconds=59)) == START + timedelta(
        minutes=5
    )
    assert next_tick(every_5, START, START + timedelta(minutes=5)) == START + timedelta(minutes=10)
    # Down for an hour: the next tick is the first after now, not twelve at once.
    late = START + timedelta(hours=1, minutes=2)
    assert next_tick(every_5, START, late) == START + timedelta(hours=1, minutes=5)


def test_period_parts_add_up() -> None:
    assert Period(days=1, hours=2, seconds=3).length == 86400 + 7200 + 3
    assert Period(seconds=0.25).length == 0.25


@pytest.mark.parametrize(
    "bad", [{}, {"seconds": 0}, {"seconds": -1}, {"minutes": float("inf")}, {"hours": "1"}]
)
def test_bad_periods_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(InvalidError, match="Period"):
        Period(**bad)  # type: ignore[arg-type]


def test_cron_ticks_in_its_time_zone() -> None:
    assert next_tick(Cron("*/15 * * * *"), START, START) == START + timedelta(minutes=15)
    assert next_tick(Cron("0 9 * * *"), START, START) == datetime(2026, 3, 29, 9, tzinfo=UTC)
    paris = Cron("0 9 * * *", timezone="Europe/Paris")
    # 9:00 in Paris on 29 March 2026 is 07:00 UTC: summer time began that night.
    assert next_tick(paris, START, START) == datetime(2026, 3, 29, 7, tzinfo=UTC)
    weekdays = Cron("30 8 * * 1-5")
    assert next_tick(weekdays, START, START) == datetime(2026, 3, 30, 8, 30, tzinfo=UTC)


def test_bad_cron_expressions_and_zones_are_refused() -> None:
    with pytest.raises(InvalidError, match="not a valid cron"):
        Cron("61 * * * *")
    with pytest.raises(InvalidError, match="unknown time zone"):
        Cron("* * * * *", timezone="Mars/Olympus")


def test_schedules_attach_to_functions_without_arguments_only() -> None:
    app = shoal.App("schedules")

    with pytest.raises(InvalidError, match="must take no arguments"):

        @app.function(schedule=Period(hours=1), serialized=True)
        def needs(x: int) -> None: ...

    with pytest.raises(InvalidError, match=r"Period or shoal\.Cron"):

        @app.function(schedule="daily", serialized=True)  # type: ignore[arg-type]
        def wrong() -> None: ...

    with pytest.raises(InvalidError, match="not classes"):
        app.cls(schedule=Period(hours=1))

    @app.function(schedule=Cron("0 * * * *"), serialized=True)
    def hourly(optional: int = 1) -> None: ...

    assert hourly.spec.schedule == Cron("0 * * * *")
