"""What a pool's parts share: the state of one function's pool, declared once.

:class:`~shoal.control.pool.Pool` is built from three parts, one concept each:
the queue, dispatch and scaling (``control/pool.py``), launching and retiring
containers (``control/launching.py``), and what happens when an input or a
container fails (``control/recovery.py``). Each part is a class that works on the
state declared here; ``Pool.__init__`` sets it all, and ``Pool`` is the only class
made of them.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING

from shoal.backends.base import Backend, ContainerLaunch, Preload
from shoal.control.budget import ContainerBudget
from shoal.control.calls import InputRecord
from shoal.control.containers import ContainerHandle, ContainerSet, StartHealth
from shoal.control.events import Channel, EventBus
from shoal.control.input_queue import Waiting
from shoal.control.tally import ContainerTally
from shoal.deadlines import DeadlineHeap
from shoal.spec.events import (
    ContainerDraining,
    ContainerReady,
    ContainerStarting,
    ContainerStopped,
    InputCancelled,
    InputFailed,
    InputRetried,
    InputsDispatched,
    InputsFinished,
    InputsQueued,
    ScalingDecided,
    StopReason,
)
from shoal.spec.function import CodeRef, FunctionSpec
from shoal.spec.resources import Grant

#: Builds the launch description of a container from its id, label and the room it holds.
Launcher = Callable[[str, str, Grant | None], ContainerLaunch]


class PoolState:
    """The state of one pool (set by ``Pool.__init__``), and the steps each part takes
    from another."""

    spec: FunctionSpec
    _env: dict[str, str]  # variables every container gets (its secrets)
    _prefix: str  # container ids are ``{prefix}-c{n}``
    _label: str  # what its containers' output lines start with
    _budget: ContainerBudget | None
    _code: CodeRef
    _backend: Backend
    _launcher: Launcher
    _clock: Callable[[], float]
    _waiting: Waiting
    _containers: ContainerSet
    _numbers: itertools.count[int]
    _health: StartHealth
    #: The timeout backstop: each dispatched ``(record, attempt)`` until its deadline.
    _deadlines: DeadlineHeap[tuple[InputRecord, int]]
    _tasks: set[asyncio.Task[None]]
    _closed: bool
    _memory_check: asyncio.TimerHandle | None
    _preload: Preload
    events: EventBus
    _tally: ContainerTally
    _on_queued: Channel[InputsQueued]
    _on_dispatched: Channel[InputsDispatched]
    _on_finished: Channel[InputsFinished]
    _on_failed: Channel[InputFailed]
    _on_retried: Channel[InputRetried]
    _on_decided: Channel[ScalingDecided]
    _on_cancelled: Channel[InputCancelled]
    _on_starting: Channel[ContainerStarting]
    _on_up: Channel[ContainerReady]
    _on_draining: Channel[ContainerDraining]
    _on_stopped: Channel[ContainerStopped]

    if TYPE_CHECKING:  # defined by one part, taken by another

        def _pump(self) -> None: ...

        def _retire(self, handle: ContainerHandle, reason: StopReason) -> None: ...

        def _drain(self, handle: ContainerHandle, reason: StopReason) -> None: ...

        def _kill(self, handle: ContainerHandle, detail: str, reason: StopReason) -> None: ...

        def _container_gone(
            self, handle: ContainerHandle, detail: str, reason: StopReason, blame: bool = True
        ) -> None: ...

        def _fail(self, record: InputRecord, error: BaseException, kind: str = "") -> None: ...

        def _fail_waiting(self, error: BaseException) -> None: ...
