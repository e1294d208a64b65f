"""The server's own Prometheus text writer says what prometheus_client's would."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from shoal.control.events import EventBus
from shoal.server.metrics import Metrics, exposition
from shoal.spec.events import ContainerStarting, InputFailed, InputsDispatched, InputsFinished


def samples(text: str) -> set[tuple[Any, ...]]:
    return {
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_the_text_parses_to_the_same_samples_as_prometheus_client_s() -> None:
    bus = EventBus()
    metrics = Metrics(bus, dict)
    bus.channel(ContainerStarting).publish(ContainerStarting('a"b.v1.f\\n', "c1", 0.0))
    bus.channel(InputsDispatched).publish(InputsDispatched('a"b.v1.f\\n', "c1", ["i1"], [0.3], 1))
    bus.channel(InputsFinished).publish(
        InputsFinished('a"b.v1.f\\n', "c1", ["i1", "i2"], [0.3, 0.0004], [2.0, 400.0], 2.0)
    )
    bus.channel(InputFailed).publish(
        InputFailed("svc.v2.g", "i3", "c2", "ContainerCrashError", "gone", 0.1, 0.2, 3.0)
    )
    families = list(metrics.collect())

    class Fixed:
        def collect(self) -> list[Any]:
            return families

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Fixed())  # type: ignore[arg-type]
    ours = exposition(families).decode()
    assert samples(ours) == samples(generate_latest(registry).decode())
    assert 'shoal_input_coldstart_seconds_count{app="a\\"b",function="f\\\\n"} 1.0' in ours
    assert 'shoal_inputs_total{app="svc",function="g",status="crash"} 1.0' in ours
