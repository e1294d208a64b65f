"""What pools and containers publish on the control plane's event bus.

Every event names its pool (``function``: the pool's key, e.g. ``"svc.v3.square"``)
and carries ``at``, the pool's clock (monotonic seconds) when it happened.

Inputs travel in the batches a pool handles them in: a ``.map`` queues thousands of
inputs in one step, a container gets many in one message and answers many in one,
and the events say so (:class:`InputsQueued`, :class:`InputsDispatched` and
:class:`InputsFinished` carry parallel lists, one entry per input). That is what
keeps a subscriber that hears every input cheap. Failures, retries and
cancellations are rare and come one input at a time.

An input is dispatched when the pool sends it to a container with a free slot. A
container runs every input it is sent at once (the dispatcher never sends more
than its free slots), so dispatch is also when the input starts; ``run_time`` is
from dispatch to the pool hearing its outcome.

The classes are plain slotted dataclasses, not frozen ones (a frozen dataclass's
``__init__`` costs several times more, on the hot path); subscribers treat them as
read-only, and so do publishers once published.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

#: Why a container stopped, or started draining: ``idle`` (past its scaledown window,
#: or its room was wanted by another pool), ``crash`` (it exited or disconnected
#: unasked, or could not load the user's code), ``oom`` (over its memory limit),
#: ``timeout`` (an input it could not stop outlived its timeout), ``stop`` (asked to:
#: ``shoal container stop``, the app or the server stopping) and ``redeploy`` (a new
#: version of its app replaced it).
StopReason = Literal["idle", "crash", "oom", "timeout", "stop", "redeploy"]

#: Why an input runs again: its container died (``crash``), it raised (``error``), or
#: it outlived its timeout (``timeout``).
RetryReason = Literal["crash", "error", "timeout"]


@dataclass(slots=True)
class InputsQueued:
    """Inputs entered the pool's queue (submitted, not retried); ``parents`` names, for
    each, the input whose code started it ("" for none), or is None when none was."""

    function: str
    input_ids: list[str]
    at: float
    parents: list[str] | None = None


@dataclass(slots=True)
class InputsDispatched:
    """Inputs were sent to ``container_id``, each after ``queue_waits`` seconds queued."""

    function: str
    container_id: str
    input_ids: list[str]
    queue_waits: list[float]
    at: float

    def each(self) -> Iterator[tuple[str, float]]:
        """``(input_id, queue_wait)`` of each input."""
        return zip(self.input_ids, self.queue_waits, strict=True)


@dataclass(slots=True)
class InputsFinished:
    """Inputs returned a value (or a generator ended) on ``container_id``."""

    function: str
    container_id: str
    input_ids: list[str]
    queue_waits: list[float]
    run_times: list[float]
    at: float

    def each(self) -> Iterator[tuple[str, float, float]]:
        """``(input_id, queue_wait, run_time)`` of each input."""
        return zip(self.input_ids, self.queue_waits, self.run_times, strict=True)


@dataclass(slots=True)
class InputFailed:
    """An input failed for good: the caller gets ``error_type: message``.

    ``container_id`` is None for an input that never reached a container (the pool
    stopped, or its function cannot load); then ``run_time`` is 0.
    """

    function: str
    input_id: str
    container_id: str | None
    error_type: str
    message: str
    queue_wait: float
    run_time: float
    at: float
    #: The function's traceback, as its container described it ("" for other failures).
    traceback: str = ""


@dataclass(slots=True)
class InputRetried:
    """An input failed and goes back to the queue, after ``delay`` seconds; ``attempt``
    counts its runs so far (1: it failed once)."""

    function: str
    input_id: str
    container_id: str | None
    reason: RetryReason
    attempt: int
    delay: float
    at: float


@dataclass(slots=True)
class InputCancelled:
    """The caller cancelled an input (dropped from the queue, or stopped on its container)."""

    function: str
    input_id: str
    container_id: str | None
    at: float


@dataclass(slots=True)
class ContainerStarting:
    """The pool asked its backend for a container."""

    function: str
    container_id: str
    at: float


@dataclass(slots=True)
class ContainerReady:
    """A container loaded the user's code and takes inputs, ``startup`` seconds after
    its :class:`ContainerStarting`; its enter hooks took ``enter`` of them."""

    function: str
    container_id: str
    startup: float
    at: float
    enter: float = 0.0


@dataclass(slots=True)
class ContainerDraining:
    """A container takes no more inputs; it stops once the ones it runs finish."""

    function: str
    container_id: str
    reason: StopReason
    at: float


@dataclass(slots=True)
class ContainerStopped:
    """A container is gone; ``detail`` says how, in words (``"exited with code 1"``),
    and ``lifetime`` is seconds since its :class:`ContainerStarting`."""

    function: str
    container_id: str
    reason: StopReason
    detail: str
    lifetime: float
    at: float


@dataclass(slots=True)
class ScalingDecided:
    """One run of the autoscaling policy: what it saw and what it decided.

    ``queued``, ``running`` and ``containers`` are the policy's snapshot (an isolated
    input counts as a whole container's worth of inputs); ``idle`` counts the idle
    containers it was shown. ``start`` containers were wanted; ``awaiting_room`` of
    them could not start for want of room on the machine. ``stop`` names the
    containers it retired.
    """

    function: str
    queued: int
    running: int
    containers: int
    idle: int
    start: int
    stop: tuple[str, ...]
    awaiting_room: int
    at: float


@dataclass(slots=True)
class ContainerOutput:
    """Lines a container wrote to ``stream`` (``"stdout"`` or ``"stderr"``), and the call
    each line was printed for ("" for none), or None when no line was an input's."""

    function: str
    container_id: str
    stream: str
    lines: list[str]
    at: float
    inputs: list[str] | None = None


@dataclass(slots=True)
class ContainerReport:
    """What a container saw since its last report: the size of each batch its
    ``@batched`` function ran, and the longest its event loop was late."""

    function: str
    container_id: str
    batch_sizes: list[int]
    loop_lag: float
    at: float


#: Every event the bus carries.
Event = (
    InputsQueued
    | InputsDispatched
    | InputsFinished
    | InputFailed
    | InputRetried
    | InputCancelled
    | ContainerStarting
    | ContainerReady
    | ContainerDraining
    | ContainerStopped
    | ScalingDecided
    | ContainerOutput
    | ContainerReport
)

#: The event classes, for subscribing to all of them.
EVENT_TYPES: tuple[type[Event], ...] = (
    InputsQueued,
    InputsDispatched,
    InputsFinished,
    InputFailed,
    InputRetried,
    InputCancelled,
    ContainerStarting,
    ContainerReady,
    ContainerDraining,
    ContainerStopped,
    ScalingDecided,
    ContainerOutput,
    ContainerReport,
)
