"""sandbox: how fast a sandbox starts and how many a server holds.

- ``create_to_first_byte``: ``Sandbox.create()`` then ``exec("echo", "hi")``, until the
  first byte of its output is read back (p50 and p99 over the samples, ms), with the
  default outbound network (pasta joined to the jail) and with ``block_network=True``;
  beside it,
  in the same run, ``bwrap /bin/true`` with the same namespaces (the jail's floor) and a
  plain fork and exec of ``echo hi`` with its output read (the process floor).
- ``creates_per_s``: sandboxes created (each running ``true``) and terminated, 8 at a time,
  over a few seconds.
- ``idle_rss_mb``: this process's resident memory grown by holding N idle sandboxes (the
  embedded server runs in this process, so its share is all of it), and per sandbox.

Everything runs on the embedded server of this process, under one looked-up app.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import time

import shoal
from benchmarks.big_map import rss_mb
from benchmarks.report import Result
from shoal.backends import isolation


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def _floors(samples: int) -> tuple[float, float]:
    bwrap = isolation.bwrap()
    assert bwrap is not None
    jail = [bwrap, "--unshare-all", "--die-with-parent", "--cap-drop", "ALL"]
    jail += ["--ro-bind", "/usr", "/usr", "--symlink", "usr/lib", "/lib", "--symlink"]
    jail += ["usr/lib64", "/lib64", "--symlink", "usr/bin", "/bin", "--proc", "/proc"]
    jail += ["--dev", "/dev", "/bin/true"]
    jails, plains = [], []
    for _ in range(samples):
        began = time.perf_counter()
        subprocess.run(jail, check=True)
        jails.append(time.perf_counter() - began)
        began = time.perf_counter()
        subprocess.run(["echo", "hi"], check=True, capture_output=True)
        plains.append(time.perf_counter() - began)
    return statistics.median(jails) * 1e3, statistics.median(plains) * 1e3


def _first_bytes(app: shoal.App, samples: int, block_network: bool = False) -> list[float]:
    took = []
    for _ in range(samples):
        began = time.perf_counter()
        sb = shoal.Sandbox.create(app=app, block_network=block_network)
        process = sb.exec("echo", "hi")
        next(iter(process.stdout))
        took.append((time.perf_counter() - began) * 1e3)
        sb.terminate()
    return took


async def _churn(app: shoal.App, seconds: float, at_once: int) -> float:
    done = 0
    ends = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < ends:
            sb = await shoal.Sandbox.create.aio("true", app=app)
            await sb.wait.aio(raise_on_termination=False)
            await sb.terminate.aio()
            done += 1

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(at_once)))
    return done / (time.perf_counter() - began)


def _idle(app: shoal.App, count: int) -> float:
    before = rss_mb()

    async def make() -> list[shoal.Sandbox]:
        return await asyncio.gather(*(shoal.Sandbox.create.aio(app=app) for _ in range(count)))

    held = asyncio.run(make())
    grown = rss_mb() - before

    async def end() -> None:
        await asyncio.gather(*(sb.terminate.aio() for sb in held))

    asyncio.run(end())
    return grown


def run(name: str, quick: bool) -> Result:
    result = Result(name)
    why = isolation.problem()
    if why:
        result.notes = f"skipped: {why}"
        return result
    samples = 10 if quick else 100
    app = shoal.App.lookup("bench-sandbox", create_if_missing=True)
    _first_bytes(app, 2)  # the embedded server's own start, and the first imports
    jail_ms, plain_ms = _floors(samples)
    firsts = _first_bytes(app, samples)
    offline = _first_bytes(app, samples, block_network=True)
    result.baseline["bwrap_true_ms"] = jail_ms
    result.baseline["fork_exec_echo_ms"] = plain_ms
    result.figures["create_to_first_byte_p50_ms"] = statistics.median(firsts)
    result.figures["create_to_first_byte_p99_ms"] = _percentile(firsts, 0.99)
    result.figures["blocked_network_p50_ms"] = statistics.median(offline)
    result.figures["blocked_network_p99_ms"] = _percentile(offline, 0.99)
    result.figures["creates_per_s"] = asyncio.run(_churn(app, 2.0 if quick else 5.0, 8))
    count = 20 if quick else 200
    grown = _idle(app, count)
    result.figures[f"idle_{count}_rss_mb"] = grown
    result.figures["idle_rss_mb_per_sandbox"] = grown / count
    result.notes = (
        f"{samples} creates; p50 goal <= 50 ms, p99 <= 150 ms; >= 50 creates/s; 200 idle <= 200 MB"
    )
    return result
