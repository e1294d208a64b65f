"""How results are shown: a table for people, one JSON line per workload for machines."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table


@dataclass
class Result:
    """One workload's figures, with the baseline measured in the same run."""

    name: str
    figures: dict[str, float] = field(default_factory=dict)
    baseline: dict[str, float] = field(default_factory=dict)
    notes: str = ""

    def ratio(self, figure: str, base: str) -> float:
        return self.figures[figure] / self.baseline[base]


def machine() -> str:
    """What the numbers were measured on."""
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )


def _fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.4f}"


def show(results: list[Result], quick: bool) -> None:
    table = Table(title=f"Shoal benchmarks{' (quick)' if quick else ''} on {machine()}")
    table.add_column("workload")
    table.add_column("figures")
    table.add_column("baseline (same run)")
    table.add_column("notes")
    for r in results:
        table.add_row(
            r.name,
            "\n".join(f"{k}: {_fmt(v)}" for k, v in r.figures.items()),
            "\n".join(f"{k}: {_fmt(v)}" for k, v in r.baseline.items()),
            r.notes,
        )
    Console(width=160).print(table)
    for r in results:
        line: dict[str, Any] = {"workload": r.name, "quick": quick, **r.figures}
        line.update({f"baseline_{k}": v for k, v in r.baseline.items()})
        print(json.dumps(line, sort_keys=True))
