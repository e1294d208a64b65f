"""Prometheus metrics of a server's pools, kept from the control plane's event bus.

``GET /metrics`` (and ``/_shoal/metrics``) on the server's HTTP port answers in
Prometheus' text format, behind the server's token (``Authorization: Bearer``) unless
the server runs with ``--metrics-public``. Every series is labelled by ``app`` and
``function``; versions of one app add to the same series, so a counter keeps
counting across a redeploy.

Cost. The bus hands inputs over in batches (see :mod:`shoal.spec.events`), and this
module keeps its own counts in plain lists (a histogram observation is one bisect
and two additions), turning them into Prometheus families only when scraped, so
the per-input work on the control loop stays a few hundred nanoseconds. Gauges
(pending and running inputs, containers by state) are read from the pools at the
scrape, so they cost nothing between scrapes.
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.samples import Sample

from shoal.control.events import EventBus
from shoal.control.pool import Pool
from shoal.gateway.server import HttpTally
from shoal.server.timeline import process_usage
from shoal.spec.events import (
    ContainerReady,
    ContainerReport,
    ContainerStarting,
    ContainerStopped,
    InputCancelled,
    InputFailed,
    InputRetried,
    InputsDispatched,
    InputsFinished,
    ScalingDecided,
)
from shoal.spec.histogram import BATCH_SIZES, BUCKETS_LONG, Histogram, combined

#: What ``/metrics`` answers with.
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
#: A pool key as the server makes it: ``<app>.v<version>.<function>``.
_KEY: Final = re.compile(r"^(?P<app>.+?)\.v\d+\.(?P<function>.+)$")
#: The ``status`` of a failed input, by the error the pool failed it with (anything
#: else is the function's own exception: ``failure``).
_FAILURE_STATUS: Final = {
    "FunctionTimeoutError": "timeout",
    "ContainerCrashError": "crash",
    "ContainerInitError": "init_failure",
}


class _Histograms(Metric):
    """A histogram family whose series are kept as they are added, unchecked (the bounds
    and names here are Shoal's own, and prometheus_client's checks cost 0.1 ms a series),
    and written straight to text by :func:`exposition`: a series' labels are escaped
    once, not once a bucket. ``samples`` builds prometheus_client's samples when asked
    (its own writer, and the test comparing the two)."""

    def __init__(self, name: str, documentation: str, labels: list[str]) -> None:
        self._series: list[tuple[list[str], list[tuple[str, float]], float]] = []
        super().__init__(name, documentation, "histogram")
        self._names = labels

    @property
    def samples(self) -> list[Sample]:
        found = []
        for values, buckets, total in self._series:
            labels = dict(zip(self._names, values, strict=True))
            for bound, count in buckets:
                found.append(Sample(f"{self.name}_bucket", {**labels, "le": bound}, count))
            found.append(Sample(f"{self.name}_count", labels, buckets[-1][1]))
            found.append(Sample(f"{self.name}_sum", labels, total))
        return found

    @samples.setter
    def samples(self, given: list[Sample]) -> None:  # Metric.__init__ sets it empty
        del given

    def add_metric(self, values: list[str], buckets: list[tuple[str, float]], total: float) -> None:
        self._series.append((values, buckets, total))

    def text(self, add: Callable[[str], None]) -> None:
        """Write each series' lines with ``add``."""
        name = self.name
        for values, buckets, total in self._series:
            labels = ",".join(
                f'{k}="{_escaped(v)}"' for k, v in zip(self._names, values, strict=True)
            )
            for bound, count in buckets:
                add(f'{name}_bucket{{{labels},le="{bound}"}} {_number(count)}\n')
            add(f"{name}_count{{{labels}}} {_number(buckets[-1][1])}\n")
            add(f"{name}_sum{{{labels}}} {_number(total)}\n")


def exposition(families: Iterable[Metric]) -> bytes:
    """``families`` in Prometheus' text format (0.0.4)."""
    out: list[str] = []
    add = out.append
    for family in families:
        name = family.name + ("_total" if family.type == "counter" else "")
        add(f"# HELP {name} {_escaped(family.documentation)}\n# TYPE {name} {family.type}\n")
        if isinstance(family, _Histograms):
            family.text(add)
            continue
        for sample in family.samples:
            value = _number(sample.value)
            if sample.labels:
                labels = ",".join(f'{k}="{_escaped(v)}"' for k, v in sample.labels.items())
                add(f"{sample.name}{{{labels}}} {value}\n")
            else:
                add(f"{sample.name} {value}\n")
    return "".join(out).encode()


@functools.lru_cache(maxsize=4096)  # the same apps, functions and containers every scrape
def _escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    if value != value:
        return "NaN"
    return repr(float(value))


def labels_of(key: str) -> tuple[str, str]:
    """``(app, function)`` of a pool key (a pool of no app: ``("", key)``).

    Example::

        >>> labels_of("svc.v3.square")
        ('svc', 'square')
    """
    found = _KEY.match(key)
    return (found["app"], found["function"]) if found else ("", key)


class _Series:
    """Everything counted for one ``(app, function)``."""

    def __init__(self) -> None:
        self.inputs: Counter[str] = Counter()
        self.retries = 0
        self.queue = Histogram(BUCKETS_LONG)
        self.execution = Histogram(BUCKETS_LONG)
        self.starts = 0
        self.stops: Counter[str] = Counter()
        self.startup = Histogram(BUCKETS_LONG)
        self.decisions: Counter[str] = Counter()
        self.desired = 0
        self.coldstart = Histogram(BUCKETS_LONG)
        self.enter = Histogram(BUCKETS_LONG)
        self.batch = Histogram(BATCH_SIZES)
        #: Containers started and not yet sent an input: the inputs of their first
        #: dispatch waited for them (their queue waits are cold starts).
        self.fresh: set[str] = set()


class Metrics:
    """Subscribes to ``events`` and answers scrapes; ``pools`` gives the live pools by key."""

    def __init__(
        self,
        events: EventBus,
        pools: Callable[[], dict[str, Pool]],
        http: HttpTally | None = None,
    ) -> None:
        self._pools = pools
        self._http = http
        #: The longest the server's loop was late since the last scrape (see note_lag).
        self._lag = 0.0
        #: The longest a container's loop was late, as containers reported it since then.
        self._container_lag = 0.0
        self._series: dict[str, _Series] = {}  # by pool key
        stop_inputs = events.subscribe(self._hear_inputs, InputsFinished, InputsDispatched)
        stop_rest = events.subscribe(
            self._hear,
            InputFailed,
            InputRetried,
            InputCancelled,
            ContainerStarting,
            ContainerReady,
            ContainerStopped,
            ScalingDecided,
            ContainerReport,
        )

        def unsubscribe() -> None:
            stop_inputs()
            stop_rest()

        self.unsubscribe = unsubscribe

    def _of(self, key: str) -> _Series:
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series()
        return series

    def _hear_inputs(self, event: InputsFinished | InputsDispatched) -> None:
        """The batches every input passes through (the hot ones)."""
        series = self._series.get(event.function) or self._of(event.function)
        if isinstance(event, InputsFinished):
            series.inputs["success"] += len(event.input_ids)
            series.queue.add_many(event.queue_waits)
            series.execution.add_many(event.run_times)
        elif event.container_id in series.fresh:  # its first inputs waited for it
            series.fresh.discard(event.container_id)
            series.coldstart.add_many(event.queue_waits)

    def _hear(self, event: Any) -> None:
        series = self._series.get(event.function) or self._of(event.function)
        if isinstance(event, InputFailed):
            series.inputs[_FAILURE_STATUS.get(event.error_type, "failure")] += 1
            series.queue.add(event.queue_wait)
            if event.container_id is not None:
                series.execution.add(event.run_time)
        elif isinstance(event, InputRetried):
            series.retries += 1
        elif isinstance(event, InputCancelled):
            series.inputs["cancelled"] += 1
        elif isinstance(event, ContainerStarting | ContainerStopped):
            self._hear_container(series, event)
        elif isinstance(event, ContainerReady):
            series.startup.add(event.startup)
            series.enter.add(event.enter)
        elif isinstance(event, ContainerReport):
            if event.batch_sizes:
                series.batch.add_many(event.batch_sizes)
            self._container_lag = max(self._container_lag, event.loop_lag)
        elif isinstance(event, ScalingDecided):
            series.desired = event.containers + event.start - len(event.stop)
            if event.start:
                series.decisions["up"] += 1
            if event.stop:
                series.decisions["down"] += 1

    @staticmethod
    def _hear_container(series: _Series, event: ContainerStarting | ContainerStopped) -> None:
        if isinstance(event, ContainerStarting):
            series.starts += 1
            series.fresh.add(event.container_id)
        else:
            series.stops[event.reason] += 1
            series.fresh.discard(event.container_id)

    def note_lag(self, seconds: float) -> None:
        """The server's loop ran a timer ``seconds`` late (its ticker says so each second)."""
        self._lag = max(self._lag, seconds)

    def scrape(self) -> bytes:
        """The text exposition of every series now (Prometheus' text format 0.0.4, as
        ``prometheus_client.generate_latest`` writes it, in a quarter of its time: the
        names and label names here are fixed and valid, so only values are escaped)."""
        return exposition(self.collect())

    def collect(self) -> Iterator[Metric]:
        """The families (called by the registry at each scrape)."""
        names = ["app", "function"]
        pending = GaugeMetricFamily(
            "shoal_function_pending_inputs", "Inputs queued for a container", labels=names
        )
        running = GaugeMetricFamily(
            "shoal_function_running_inputs", "Inputs running on containers", labels=names
        )
        containers = GaugeMetricFamily(
            "shoal_containers", "Containers by state", labels=[*names, "state"]
        )
        gauges: dict[tuple[str, str], list[int]] = {}
        states: dict[tuple[str, str], Counter[str]] = {}
        live = self._pools()
        for key, pool in live.items():
            where = labels_of(key)
            stats = pool.stats()
            both = gauges.setdefault(where, [0, 0])
            both[0] += stats.queued
            both[1] += stats.running
            counted = states.setdefault(where, Counter())
            for container in pool.containers():
                state = container["state"]
                if state == "ready":
                    state = "busy" if container["running"] else "idle"
                counted[state] += 1
        for where, (queued, busy) in gauges.items():
            pending.add_metric(list(where), queued)
            running.add_metric(list(where), busy)
            for state in ("starting", "idle", "busy", "draining"):
                containers.add_metric([*where, state], states[where][state])
        yield pending
        yield running
        yield containers
        yield from self._usage(live)
        yield from self._counted(names, set(live))
        yield from self._web()
        lag = GaugeMetricFamily(
            "shoal_event_loop_lag_seconds",
            "The longest a loop ran a timer late since the last scrape",
            labels=["component"],
        )
        lag.add_metric(["server"], self._lag)
        lag.add_metric(["container"], self._container_lag)
        self._lag = self._container_lag = 0.0
        yield lag

    def _usage(self, live: dict[str, Pool]) -> Iterator[Metric]:
        """CPU seconds and resident memory of each container on this machine."""
        names = ["app", "function", "container"]
        cpu = CounterMetricFamily(
            "shoal_container_cpu_seconds", "CPU seconds a container used", labels=names
        )
        memory = GaugeMetricFamily(
            "shoal_container_memory_bytes", "A container's resident memory", labels=names
        )
        for key, pool in live.items():
            where = labels_of(key)
            for container in pool.containers():
                if not container["pid"] or container["node"]:
                    continue  # not started yet, or on another machine
                used = process_usage(container["pid"])
                if used is not None:
                    cpu.add_metric([*where, container["id"]], used[0])
                    memory.add_metric([*where, container["id"]], used[1])
        yield cpu
        yield memory

    def _web(self) -> Iterator[Metric]:
        """Web endpoints' requests, by method and status, and their durations."""
        names = ["app", "function"]
        requests = CounterMetricFamily(
            "shoal_http_requests",
            "Requests to web endpoints, by method and status",
            labels=[*names, "method", "status"],
        )
        seconds = _Histograms(
            "shoal_http_request_seconds", "Seconds to answer a web request", labels=names
        )
        if self._http is not None:
            for (endpoint, method, status), count in self._http.counts.items():
                app, _, function = endpoint.partition("/")
                requests.add_metric([app, function, method, str(status)], count)
            for endpoint, histogram in self._http.seconds.items():
                app, _, function = endpoint.partition("/")
                seconds.add_metric([app, function], histogram.buckets(), histogram.total)
        yield requests
        yield seconds

    def _counted(self, names: list[str], live: set[str]) -> Iterator[Metric]:
        inputs = CounterMetricFamily(
            "shoal_inputs", "Inputs that ended, by outcome", labels=[*names, "status"]
        )
        retries = CounterMetricFamily("shoal_input_retries", "Inputs run again", labels=names)
        queue = _Histograms(
            "shoal_input_queue_seconds", "Seconds inputs waited for a container", labels=names
        )
        execution = _Histograms(
            "shoal_input_execution_seconds",
            "Seconds from dispatch to outcome",
            labels=names,
        )
        starts = CounterMetricFamily("shoal_container_starts", "Containers started", labels=names)
        stops = CounterMetricFamily(
            "shoal_container_stops", "Containers stopped, by reason", labels=[*names, "reason"]
        )
        startup = _Histograms(
            "shoal_container_startup_seconds",
            "Seconds from a container's start to its first readiness",
            labels=names,
        )
        coldstart = _Histograms(
            "shoal_input_coldstart_seconds",
            "Queue waits of inputs whose container started for them",
            labels=names,
        )
        enter = _Histograms(
            "shoal_container_enter_seconds",
            "Seconds a container's enter hooks took",
            labels=names,
        )
        batch = _Histograms(
            "shoal_batch_size", "Inputs in each batch of a @batched function", labels=names
        )
        desired = GaugeMetricFamily(
            "shoal_autoscaler_desired_containers",
            "Containers the autoscaler wanted at its last decision",
            labels=names,
        )
        decisions = CounterMetricFamily(
            "shoal_autoscaler_decisions",
            "Autoscaler decisions that started or stopped containers",
            labels=[*names, "direction"],
        )
        merged: dict[tuple[str, str], list[_Series]] = {}
        wanted: Counter[tuple[str, str]] = Counter()  # what the live versions' autoscalers want
        for key, series in self._series.items():
            merged.setdefault(labels_of(key), []).append(series)
            if key in live:
                wanted[labels_of(key)] += series.desired
        for where, group in merged.items():
            label = list(where)
            for status in ("success", "failure", "timeout", "cancelled", "init_failure", "crash"):
                inputs.add_metric([*label, status], sum(s.inputs[status] for s in group))
            retries.add_metric(label, sum(s.retries for s in group))
            for family, kept in (
                (queue, [s.queue for s in group]),
                (execution, [s.execution for s in group]),
                (startup, [s.startup for s in group]),
                (coldstart, [s.coldstart for s in group]),
                (enter, [s.enter for s in group]),
                (batch, [s.batch for s in group]),
            ):
                total = combined(kept)
                family.add_metric(label, total.buckets(), total.total)
            starts.add_metric(label, sum(s.starts for s in group))
            for reason in ("idle", "crash", "oom", "timeout", "stop", "redeploy"):
                stops.add_metric([*label, reason], sum(s.stops[reason] for s in group))
            desired.add_metric(label, wanted[where])
            for direction in ("up", "down"):
                decisions.add_metric(
                    [*label, direction], sum(s.decisions[direction] for s in group)
                )
        yield from (inputs, retries, queue, execution, coldstart, starts, stops, startup, enter)
        yield batch
        yield from (desired, decisions)
