"""OpenTelemetry spans of each input's path, when the SDK is there and asked for.

Tracing is on when ``opentelemetry-sdk`` is installed and either the process already
set an SDK tracer provider (code that runs an app on the embedded server, with its own
exporter), or ``OTEL_TRACES_EXPORTER`` names an exporter (``console``, or ``otlp`` with
``opentelemetry-exporter-otlp`` installed; the standard ``OTEL_*`` variables configure
it). Otherwise nothing subscribes and nothing here runs: tracing costs nothing.

Every input is a span named after its function (``shoal.input``, kind CONSUMER), from
the moment it is queued to its outcome, with two kinds of child span per attempt:
``queued`` (until a container takes it) and ``run`` (on that container, until its
outcome). A retry ends the attempt's ``run`` span with the reason and opens a new
``queued`` one; the input span gets a ``retried`` event. An input started by code that
runs another input (a nested ``.remote()``, ``.map()`` or ``.spawn()``) is a child of that
input's ``run`` span, so one trace shows a whole call tree. The spans are built from the
control plane's events, on its loop; an input's span lives in memory only while it is
in flight (at most :data:`MAX_LIVE` at once: past that, new inputs are not traced).
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shoal import log
from shoal.control.events import EventBus
from shoal.spec.events import (
    InputCancelled,
    InputFailed,
    InputRetried,
    InputsDispatched,
    InputsFinished,
    InputsQueued,
)

#: Inputs traced at once; an input queued past this is not traced.
MAX_LIVE = 100_000

#: The events a tracer hears.
TRACED = (InputsQueued, InputsDispatched, InputsFinished, InputFailed, InputRetried, InputCancelled)


@dataclass(slots=True)
class _Live:
    span: Any
    step: Any  # the attempt's queued or run span
    attempt: int = 1
    children: int = field(default=0)


def start(events: EventBus, labels: Callable[[str], tuple[str, str]]) -> InputTracer | None:
    """An :class:`InputTracer` of ``events`` when tracing is on (see the module
    docstring), else None; ``labels`` gives a pool key's app and function."""
    exporter_named = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter_named in ("", "none") and "opentelemetry.sdk.trace" not in sys.modules:
        return None  # no exporter, and no provider set by this process: not even imported
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        return None
    provider = trace.get_tracer_provider()
    own: TracerProvider | None = None
    if not isinstance(provider, TracerProvider):
        name = exporter_named.split(",")[0].strip()
        if name in ("", "none"):
            return None
        exporter = _exporter(name)
        if exporter is None:
            return None
        service = os.environ.get("OTEL_SERVICE_NAME") or "shoal"
        provider = own = TracerProvider(resource=Resource.create({"service.name": service}))
        own.add_span_processor(BatchSpanProcessor(exporter))
    return InputTracer(events, provider.get_tracer("shoal"), labels, own)


def _exporter(name: str) -> Any | None:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if name == "otlp":
        protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get(
            "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
        )
        transport = "grpc" if protocol == "grpc" else "http"
        module = f"opentelemetry.exporter.otlp.proto.{transport}.trace_exporter"
        try:
            exporter_class = importlib.import_module(module).OTLPSpanExporter
        except ImportError:
            _warn("OTEL_TRACES_EXPORTER=otlp needs opentelemetry-exporter-otlp; not tracing")
            return None
        return exporter_class()
    _warn(f"OTEL_TRACES_EXPORTER={name!r}: Shoal knows console and otlp; not tracing")
    return None


def _warn(message: str) -> None:
    log.say(f"shoal: {message}", component="tracing", level="warning", stream=sys.stderr)


class InputTracer:
    """Turns the control plane's input events into spans (see the module docstring)."""

    def __init__(
        self,
        events: EventBus,
        tracer: Any,
        labels: Callable[[str], tuple[str, str]],
        own_provider: Any | None = None,
    ) -> None:
        from opentelemetry import context, trace

        self._trace = trace
        self._root = context.Context()  # an input no input started: a trace of its own
        self._tracer = tracer
        self._labels = labels
        self._own_provider = own_provider
        self._live: dict[str, _Live] = {}
        self._unsubscribe = events.subscribe(self.hear, *TRACED)

    def hear(self, event: Any) -> None:
        now = time.time_ns()
        if isinstance(event, InputsQueued):
            self._queued(event, now)
        elif isinstance(event, InputsDispatched):
            self._dispatched(event, now)
        elif isinstance(event, InputsFinished):
            for input_id in event.input_ids:
                self._end(input_id, now, ok=True)
        elif isinstance(event, InputFailed):
            self._failed(event, now)
        elif isinstance(event, InputRetried):
            self._retried(event, now)
        elif isinstance(event, InputCancelled):
            self._end(event.input_id, now, cancelled=True)

    def _queued(self, event: InputsQueued, now: int) -> None:
        app, function = self._labels(event.function)
        parents = event.parents
        start = self._tracer.start_span
        in_context = self._trace.set_span_in_context
        for index, input_id in enumerate(event.input_ids):
            if len(self._live) >= MAX_LIVE:
                return
            parent = self._live.get(parents[index]) if parents else None
            span = start(
                function,
                context=self._root if parent is None else in_context(parent.step),
                kind=self._trace.SpanKind.CONSUMER,
                start_time=now,
                attributes={
                    "shoal.app": app,
                    "shoal.function": function,
                    "shoal.input_id": input_id,
                },
            )
            step = start("queued", context=in_context(span), start_time=now)
            self._live[input_id] = _Live(span, step)

    def _dispatched(self, event: InputsDispatched, now: int) -> None:
        start = self._tracer.start_span
        in_context = self._trace.set_span_in_context
        for input_id, wait in event.each():
            live = self._live.get(input_id)
            if live is None:
                continue
            live.step.end(end_time=now)
            live.step = start(
                "run",
                context=in_context(live.span),
                start_time=now,
                attributes={
                    "shoal.container_id": event.container_id,
                    "shoal.attempt": live.attempt,
                    "shoal.queue_wait_seconds": wait,
                },
            )
            live.span.add_event(
                "dispatched", {"shoal.container_id": event.container_id}, timestamp=now
            )

    def _retried(self, event: InputRetried, now: int) -> None:
        live = self._live.get(event.input_id)
        if live is None:
            return
        status = self._trace.Status(self._trace.StatusCode.ERROR, f"retried: {event.reason}")
        live.step.set_status(status)
        live.step.set_attribute("shoal.retry_reason", event.reason)
        live.step.end(end_time=now)
        live.span.add_event(
            "retried",
            {
                "shoal.attempt": event.attempt,
                "shoal.reason": event.reason,
                "shoal.delay": event.delay,
            },
            timestamp=now,
        )
        live.attempt += 1
        live.step = self._tracer.start_span(
            "queued", context=self._trace.set_span_in_context(live.span), start_time=now
        )

    def _failed(self, event: InputFailed, now: int) -> None:
        live = self._live.get(event.input_id)
        if live is None:
            return
        status = self._trace.Status(
            self._trace.StatusCode.ERROR, f"{event.error_type}: {event.message}"
        )
        live.step.set_status(status)
        live.span.set_status(status)
        live.span.add_event(
            "exception",
            {
                "exception.type": event.error_type,
                "exception.message": event.message,
                "exception.stacktrace": event.traceback,
            },
            timestamp=now,
        )
        self._end(event.input_id, now)

    def _end(self, input_id: str, now: int, cancelled: bool = False, ok: bool = False) -> None:
        live = self._live.pop(input_id, None)
        if live is None:
            return
        if ok:
            done = self._trace.Status(self._trace.StatusCode.OK)
            live.step.set_status(done)
            live.span.set_status(done)
        if cancelled:
            live.span.set_attribute("shoal.cancelled", True)
        live.step.end(end_time=now)
        live.span.end(end_time=now)

    def close(self) -> None:
        """Stop hearing events; end the spans of inputs still in flight (marked
        unfinished) and flush what the exporter holds."""
        self._unsubscribe()
        now = time.time_ns()
        for input_id, live in list(self._live.items()):
            live.span.set_attribute("shoal.unfinished", True)
            self._end(input_id, now)
        if self._own_provider is not None:
            self._own_provider.shutdown()
