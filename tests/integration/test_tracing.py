"""OpenTelemetry spans of inputs, parented across nested calls and spawns, read back with
the SDK's in-memory exporter (in a process of its own: a tracer provider is global)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

TESTS = Path(__file__).parents[1]

SCRIPT = """
import json, os, sys, tempfile
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)

from apps import traced

with traced.app.run():
    assert traced.outer.remote(3) == 206
    assert traced.flaky.remote(os.path.join(tempfile.mkdtemp(), "marker")) == "second time works"
    try:
        traced.broken.remote()
    except ValueError:
        pass
rows = []
for s in exporter.get_finished_spans():
    rows.append({
        "name": s.name,
        "id": s.context.span_id,
        "trace": s.context.trace_id,
        "parent": s.parent.span_id if s.parent else None,
        "attributes": dict(s.attributes),
        "events": [e.name for e in s.events],
        "status": s.status.status_code.name,
    })
print(json.dumps(rows))
"""


def _spans() -> list[dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=TESTS, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout.splitlines()[-1]))


def test_each_input_is_a_span_with_its_steps_and_nested_calls_are_its_children() -> None:
    spans = _spans()
    by_id = {span["id"]: span for span in spans}

    def children(span: dict[str, Any], name: str = "") -> list[dict[str, Any]]:
        return [s for s in spans if s["parent"] == span["id"] and (not name or s["name"] == name)]

    (outer,) = [s for s in spans if s["name"] == "outer"]
    assert outer["parent"] is None and outer["attributes"]["shoal.function"] == "outer"
    assert [s["name"] for s in children(outer)] == ["queued", "run"]
    (run,) = children(outer, "run")
    nested = children(run)
    # The map's three inputs and the spawn's one, all in the outer input's trace.
    assert Counter(s["name"] for s in nested) == {"inner": 4}
    assert {s["trace"] for s in nested} == {outer["trace"]}
    for span in nested:
        assert sorted(s["name"] for s in children(span)) == ["queued", "run"]
        assert span["status"] == "OK" and "dispatched" in span["events"]
    assert ".outer-c" in run["attributes"]["shoal.container_id"]

    (flaky,) = [s for s in spans if s["name"] == "flaky"]
    assert flaky["events"] == ["dispatched", "retried", "dispatched"]
    assert flaky["status"] == "OK"
    runs = children(flaky, "run")
    assert [(r["attributes"]["shoal.attempt"], r["status"]) for r in runs] == [
        (1, "ERROR"),
        (2, "OK"),
    ]
    assert len(children(flaky, "queued")) == 2

    (broken,) = [s for s in spans if s["name"] == "broken"]
    assert broken["status"] == "ERROR" and "exception" in broken["events"]
    assert all(s["parent"] is None or s["parent"] in by_id for s in spans)  # none dangles


def test_tracing_is_on_only_with_a_provider_or_an_exporter_named() -> None:
    code = (
        "import sys\n"
        "from shoal.control.events import EventBus\n"
        "from shoal.server import tracing\n"
        "bus = EventBus()\n"
        "tracer = tracing.start(bus, lambda key: ('', key))\n"
        "print(tracer is not None, sum(len(bus.channel(k)) for k in tracing.TRACED))\n"
        "if tracer is not None:\n"
        "    tracer.close()\n"
    )
    for exporter, expected in (("", "False 0"), ("none", "False 0"), ("console", "True 6")):
        env = {**os.environ, "OTEL_TRACES_EXPORTER": exporter}
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == expected, exporter
