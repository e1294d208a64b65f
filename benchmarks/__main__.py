"""``python -m benchmarks [NAME ...] [--quick]``: run workloads, print a table and JSON lines."""

from __future__ import annotations

import argparse
import importlib
import sys
import time

from benchmarks import private_home
from benchmarks.report import Result, show

#: Workload name -> module under benchmarks/ with ``run(quick: bool) -> Result``.
WORKLOADS = {
    "map": "benchmarks.map_throughput",
    "events": "benchmarks.events",
    "observability": "benchmarks.observability",
    "latency": "benchmarks.latency",
    "burst-sync": "benchmarks.burst",
    "burst-async": "benchmarks.burst",
    "cold-start": "benchmarks.cold_start",
    "big-map": "benchmarks.big_map",
    "policy": "benchmarks.policy",
    "continuous-batching": "benchmarks.batching",
    "batched-embed": "benchmarks.batching",
    "web": "benchmarks.web",
    "chaos": "benchmarks.chaos",
    "service": "benchmarks.service",
    "dict": "benchmarks.objects",
    "ray": "benchmarks.ray_cluster",
    "sandbox": "benchmarks.sandbox",
    "isolation": "benchmarks.isolation",
}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "names",
        nargs="*",
        choices=[[], *WORKLOADS],
        metavar="NAME",
        help=f"workloads to run (default all): {', '.join(WORKLOADS)}",
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke test")
    args = parser.parse_args()
    private_home("shoal-bench-home-")  # measure the embedded default (`service` starts a server)
    names = args.names or list(WORKLOADS)
    results: list[Result] = []
    started = time.perf_counter()
    for name in names:
        module = importlib.import_module(WORKLOADS[name])
        print(f"running {name} ...", file=sys.stderr, flush=True)
        results.append(module.run(name, args.quick))
    show(results, args.quick)
    print(f"total {time.perf_counter() - started:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
