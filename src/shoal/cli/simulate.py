"""``shoal simulate APP FUNCTION``: a function's recorded traffic replayed through the
real autoscaler and dispatcher under other scaling settings (on the server, which keeps
the recording; see ``server/simulator.py``), printed beside the recorded run."""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

import click

from shoal.cli.service import JSON_FLAG, ask_server

#: The settings a what-if may change, as flags and as the server names them.
SETTINGS = {
    "max_inputs": int,
    "target_inputs": int,
    "scaledown_window": float,
    "buffer_containers": int,
    "min_containers": int,
    "max_containers": int,
}
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


def seconds(text: str) -> float:
    """``"100ms"``, ``"30s"``, ``"5m"``, ``"1h"``, ``"2d"`` or a bare number of seconds.

    Example::

        >>> seconds("100ms"), seconds("1h"), seconds("2.5")
        (0.1, 3600.0, 2.5)
    """
    found = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|min|m|h|d)?\s*", text)
    if found is None:
        raise click.BadParameter(f"{text!r}: expected a duration such as 100ms, 30s, 5m, 1h")
    return float(found[1]) * _UNITS[found[2] or "s"]


def grid_runs(fixed: dict[str, Any], axes: tuple[str, ...]) -> list[dict[str, Any]]:
    """One run per combination of the ``--grid NAME=V1,V2`` axes, each with ``fixed``.

    Example::

        >>> grid_runs({"buffer_containers": 1}, ("max_inputs=8,16",))
        [{'buffer_containers': 1, 'max_inputs': 8}, {'buffer_containers': 1, 'max_inputs': 16}]
    """
    values: dict[str, list[Any]] = {}
    for axis in axes:
        name, _, listed = axis.partition("=")
        name = name.strip().replace("-", "_")
        if name not in SETTINGS or not listed:
            raise click.BadParameter(
                f"{axis!r}: expected NAME=V1,V2 with NAME one of {list(SETTINGS)}"
            )
        try:
            values[name] = [_value(name, v) for v in listed.split(",")]
        except ValueError:
            raise click.BadParameter(f"{axis!r}: {name} takes numbers") from None
    names = sorted(values)
    return [
        {**fixed, **dict(zip(names, combo, strict=True))}
        for combo in itertools.product(*(values[n] for n in names))
    ] or [fixed]


def _value(name: str, text: str) -> Any:
    if name == "max_containers" and text.strip().lower() in ("none", "-"):
        return None
    return SETTINGS[name](text)


@click.command()
@click.argument("app_name")
@click.argument("function")
@click.option("--max-inputs", type=int, default=None, help="Inputs a container runs at once.")
@click.option("--target-inputs", type=int, default=None, help="Inputs a container is sized for.")
@click.option("--scaledown-window", type=float, default=None, help="Seconds idle before a stop.")
@click.option("--buffer-containers", type=int, default=None, help="Idle containers kept ready.")
@click.option("--min-containers", type=int, default=None, help="Containers always kept.")
@click.option("--max-containers", type=int, default=None, help="The most containers at once.")
@click.option("--since", default=None, help="Replay only the traffic of the last 1h, 30m, ...")
@click.option(
    "--grid",
    "axes",
    multiple=True,
    help="NAME=V1,V2,...: one run per combination (repeat for more axes).",
)
@click.option(
    "--p99-wait",
    default=None,
    help="With --grid: runs whose p99 queue wait is within this (100ms, 2s) sort first, by cost.",
)
@JSON_FLAG
def simulate(
    app_name: str,
    function: str,
    since: str | None,
    axes: tuple[str, ...],
    p99_wait: str | None,
    as_json: bool,
    **settings: Any,
) -> None:
    """Replay FUNCTION's recorded traffic with other scaling settings, beside the record.

    Prints container-seconds (the cost), p50/p99 queue wait, cold starts (containers
    started) and the peak of containers at once, for the recorded run and each replay.
    """
    fixed = {name: value for name, value in settings.items() if value is not None}
    runs = grid_runs(fixed, axes)
    body: dict[str, Any] = {"app": app_name, "function": function, "runs": runs}
    if since:
        body["since"] = seconds(since)
    answer = ask_server("simulate", **body)
    if as_json:
        click.echo(json.dumps(answer, indent=2))
        return
    rows = [("recorded", answer["recorded"])]
    replays = [
        (_label(run["changes"]) or "same settings", run["outcome"]) for run in answer["runs"]
    ]
    if p99_wait is not None:
        bound = seconds(p99_wait)
        replays.sort(key=lambda row: (row[1]["wait_p99"] > bound, row[1]["container_seconds"]))
    click.echo(f"{app_name}.{function}: {answer['recorded']['inputs']} inputs recorded")
    click.echo(
        f"{'RUN':44} {'CONTAINER-S':>12} {'WAIT P50':>9} {'WAIT P99':>9} {'COLD':>5} {'PEAK':>5}"
    )
    for label, outcome in rows + replays:
        mark = ""
        if p99_wait is not None and label != "recorded":
            mark = "" if outcome["wait_p99"] <= seconds(p99_wait) else "  (over --p99-wait)"
        click.echo(
            f"{label[:44]:44} {outcome['container_seconds']:12.1f} "
            f"{_ms(outcome['wait_p50']):>9} {_ms(outcome['wait_p99']):>9} "
            f"{outcome['cold_starts']:5d} {outcome['peak_containers']:5d}{mark}"
        )


def _label(changes: dict[str, Any]) -> str:
    return " ".join(f"{name}={value}" for name, value in sorted(changes.items()))


def _ms(value: float) -> str:
    return f"{value * 1000:.0f}ms" if value < 10 else f"{value:.1f}s"


COMMANDS = (simulate,)
