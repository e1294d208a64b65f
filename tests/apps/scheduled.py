"""Scheduled functions, for the schedule tests. Each run appends a line to the file
named by the environment variable TICKS (set by the test before the app runs)."""

import os

import shoal

app = shoal.App("scheduled")


@app.function(schedule=shoal.Period(seconds=0.3))
def tick() -> None:
    with open(os.environ["TICKS"], "a") as log:
        log.write("tick\n")


@app.function(schedule=shoal.Period(seconds=0.3))
def always_fails() -> None:
    with open(os.environ["TICKS"], "a") as log:
        log.write("fail\n")
    raise RuntimeError("a scheduled failure")
