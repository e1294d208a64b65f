"""What a pool does when an input or a container fails (DESIGN section 3).

A container that dies puts its inputs back at the front of the queue (an
infrastructure retry; an input that keeps dying in company is isolated and runs
alone, see :mod:`~shoal.control.calls`); a container that cannot load the user's
code fails every waiting input with that error; an input that outlives its
timeout with no answer from its container is failed here and its container
killed; a function's own exception is retried as its ``retries`` say. Each retry
and final failure is published on the event bus.
"""

from __future__ import annotations

import asyncio

from shoal.control.calls import (
    CallState,
    InputRecord,
    after_failure,
    describe,
    timeout_error,
)
from shoal.control.containers import ContainerHandle, ContainerState
from shoal.control.pool_state import PoolState
from shoal.exception import (
    ContainerCrashError,
    ContainerInitError,
    FunctionTimeoutError,
)
from shoal.protocol.messages import (
    LoadFailed,
)
from shoal.spec.events import (
    ContainerStopped,
    InputFailed,
    InputRetried,
    RetryReason,
    StopReason,
)
from shoal.spec.function import INFRA_RETRIES


class Recovery(PoolState):
    """Retries, failures and the loss of containers."""

    def _on_load_failed(self, handle: ContainerHandle, message: LoadFailed) -> None:
        detail = f"\n\n{message.traceback.rstrip()}" if message.traceback else ""
        error = ContainerInitError(
            f"container for {self.spec.name} could not load it: {message.message}{detail}"
        )
        self._health.load_failed(error)
        if handle.state is ContainerState.STARTING:
            self._drain(handle, "crash")
        self._fail_waiting(error)

    def _retry_or_fail(
        self,
        record: InputRecord,
        error: BaseException,
        *,
        crash: bool,
        alone: bool = True,
        data: bytes | None = None,
        retryable: bool = True,
        kind: str = "",
        traceback: str = "",
    ) -> None:
        """Queue ``record`` again, or fail it with ``error`` (``data``: the container's
        pickle of it, when the function raised; ``retryable``: false for an exit that a
        run again would not change, by the container's description; ``kind`` and
        ``traceback``: the type the function raised and where, as the container said)."""
        retry = after_failure(record, self.spec, crash=crash, alone=alone) if retryable else None
        if retry is None:
            record.error_data = data
            self._fail(record, error, kind, traceback)
            return
        if self._on_retried:
            reason: RetryReason = "crash" if crash else "timeout" if _timed_out(error) else "error"
            attempt = record.failures + record.crashes + record.crowd_crashes
            self._on_retried.publish(
                InputRetried(
                    self._prefix,
                    record.input_id,
                    record.container_id,
                    reason,
                    attempt,
                    retry.delay,
                    self._clock(),
                )
            )
        record.move_to(CallState.QUEUED)
        record.container_id = None
        record.queued_at = self._clock() + max(retry.delay, 0.0)
        if retry.delay <= 0:
            self._waiting.push_front(record)
        else:
            self._waiting.delay(record)
            asyncio.get_running_loop().call_later(retry.delay, self._requeue, record)

    def _requeue(self, record: InputRecord) -> None:
        if self._waiting.release(record):
            self._pump()

    def _on_deadline(self, record: InputRecord) -> None:
        """The container never reported on ``record`` past its timeout: fail it, kill it."""
        handle = self._containers.get(record.container_id or "")
        if handle is None or self._containers.remove_running(handle, record.input_id) is None:
            return
        detail = f" and container {handle.container_id} did not stop it"
        self._retry_or_fail(record, timeout_error(self.spec, record, detail), crash=False)
        self._kill(handle, "did not stop an input past its timeout", "timeout")

    def _container_gone(
        self, handle: ContainerHandle, detail: str, reason: StopReason, blame: bool = True
    ) -> None:
        """Mark ``handle`` stopped (``detail`` says how, ``reason`` why) and put its
        unanswered inputs back (idempotent). ``blame``: a container that never became
        ready counts against the function's starts (not when its node was lost)."""
        if handle.state is ContainerState.STOPPED:
            return
        never_ready = handle.state is ContainerState.STARTING
        self._containers.move(handle, ContainerState.STOPPED)
        if self._on_stopped:
            now = self._clock()
            self._on_stopped.publish(
                ContainerStopped(
                    self._prefix, handle.container_id, reason, detail, now - handle.started_at, now
                )
            )
        if self._budget is not None and handle.grant is not None:
            self._budget.give_back(handle.grant)
            handle.grant = None
        if handle.conn is not None:
            handle.conn.close()
        orphans = list(handle.running.values())
        handle.running.clear()
        alone = len(orphans) == 1
        for record in reversed(orphans):  # push_front keeps their order
            if record.done:
                continue
            error = ContainerCrashError(
                f"{describe(self.spec, record)}: container {handle.container_id} {detail} "
                f"while running it, and {INFRA_RETRIES} retries on new containers "
                "(running it alone) failed too"
            )
            self._retry_or_fail(record, error, crash=True, alone=alone)
        if never_ready and blame and not self._closed:
            gave_up = self._health.start_failed(self.spec.name, detail)
            if gave_up is not None:
                self._fail_waiting(gave_up)
        self._pump()

    def _fail_waiting(self, error: BaseException) -> None:
        for record in self._waiting.drain():
            self._fail(record, error)

    def _fail(
        self, record: InputRecord, error: BaseException, kind: str = "", traceback: str = ""
    ) -> None:
        """Fail ``record`` for good with ``error``, and say so on the bus (``kind``: the
        type the user's code raised, when ``error`` stands in for it)."""
        record.fail(error)
        if self._on_failed:
            now = self._clock()
            ran = record.container_id is not None  # cleared when it goes back to the queue
            self._on_failed.publish(
                InputFailed(
                    self._prefix,
                    record.input_id,
                    record.container_id,
                    kind or type(error).__name__,
                    str(error),
                    (record.dispatched_at if ran else now) - record.queued_at,
                    now - record.dispatched_at if ran else 0.0,
                    now,
                    traceback,
                )
            )


def _timed_out(error: BaseException) -> bool:
    return isinstance(error, FunctionTimeoutError)
