"""``@shoal.batched``: gather concurrent inputs into one call with lists.

A :class:`Batcher` collects the inputs of one batched function as they arrive.
The first input of a batch starts a ``wait_ms`` timer; the batch is called when
it reaches ``max_batch_size`` or the timer fires, whichever is first. The call
gets one list per argument (``embed(texts=[...])``) and must return a list with
one result per input, in order. An exception fails every input of the batch; a
result list of the wrong length is a clear error for each of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from shoal.context import enter_input
from shoal.protocol import payload
from shoal.protocol.messages import Input, Output, OutputStatus

#: One input of a batch: its message and unpickled arguments.
_Entry = tuple[Input, tuple[Any, ...], dict[str, Any]]

#: The size of each batch run since the last :func:`take_sizes` (the container reports
#: them: ``shoal_batch_size``).
_sizes: list[int] = []


def take_sizes() -> list[int]:
    """The sizes of the batches run since the last call (at most 10,000: a report's)."""
    global _sizes
    taken, _sizes = _sizes, []
    return taken[-10_000:]


class BatchError(Exception):
    """Raised when a batch's inputs or results do not line up."""


class Batcher:
    """Collects inputs of one batched callable and calls it once per batch.

    Args:
        fn: the user's callable, taking lists.
        max_batch_size: most inputs per call.
        wait_ms: longest wait after a batch's first input before calling.
        is_async: ``fn`` is a coroutine function (runs as a task) or not (runs
            through ``run_in_thread``).
        finish: reports each input's output.
        run_in_thread: runs a job on one of the container's worker threads.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        max_batch_size: int,
        wait_ms: float,
        is_async: bool,
        finish: Callable[[Output], None],
        run_in_thread: Callable[[Callable[[], None]], None],
    ) -> None:
        self._fn = fn
        self._max = max_batch_size
        self._wait = wait_ms / 1000
        self._is_async = is_async
        self._finish = finish
        self._run_in_thread = run_in_thread
        self._pending: list[_Entry] = []
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def add(self, message: Input) -> None:
        """Add one input (on the loop); it is called with its batch."""
        try:
            args, kwargs = payload.loads(message.args, "arguments")
        except BaseException as exc:  # the caller's arguments, not the batch, are at fault
            self._finish(failure(message.input_id, exc))
            return
        self._pending.append((message, args, kwargs))
        if len(self._pending) >= self._max:
            self.flush()
        elif len(self._pending) == 1:
            self._timer = asyncio.get_running_loop().call_later(self._wait, self.flush)

    def flush(self) -> None:
        """Call the function now with whatever is pending."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._pending = self._pending, []
        if not batch:
            return
        _sizes.append(len(batch))
        if self._is_async:
            task = asyncio.get_running_loop().create_task(self._run_async(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            self._run_in_thread(lambda: self._run_sync(batch))

    async def _run_async(self, batch: list[_Entry]) -> None:
        try:
            args, kwargs = _columns(batch)
            results = await self._fn(*args, **kwargs)
        except BaseException as exc:  # a batch-level failure fails every input in it
            self._deliver(batch, None, exc)
            return
        self._deliver(batch, results, None)

    def _run_sync(self, batch: list[_Entry]) -> None:
        enter_input(batch[0][0].input_id, batch[0][0].call_id)
        try:
            args, kwargs = _columns(batch)
            results = self._fn(*args, **kwargs)
        except BaseException as exc:  # a batch-level failure fails every input in it
            self._deliver(batch, None, exc)
            return
        self._deliver(batch, results, None)

    def _deliver(self, batch: list[_Entry], results: Any, error: BaseException | None) -> None:
        if error is None and (not isinstance(results, list | tuple) or len(results) != len(batch)):
            count = len(results) if isinstance(results, list | tuple) else type(results).__name__
            error = BatchError(
                f"a batched function must return a list with one result per input: "
                f"got {count} for {len(batch)} inputs"
            )
        for index, (message, _, _) in enumerate(batch):
            if error is not None:
                self._finish(failure(message.input_id, error))
                continue
            try:
                data = payload.dumps(results[index], "return value")
            except BaseException as exc:  # this result only
                self._finish(failure(message.input_id, exc))
                continue
            self._finish(Output(message.input_id, OutputStatus.OK, data, False))


def _columns(batch: list[_Entry]) -> tuple[list[list[Any]], dict[str, list[Any]]]:
    """Turn per-input arguments into one list per argument."""
    arity = {len(args) for _, args, _ in batch}
    keys = {frozenset(kwargs) for _, _, kwargs in batch}
    if len(arity) != 1 or len(keys) != 1:
        raise BatchError("every input of a batched function must pass the same arguments")
    width = arity.pop()
    args = [[entry[1][i] for entry in batch] for i in range(width)]
    kwargs = {key: [entry[2][key] for entry in batch] for key in keys.pop()}
    return args, kwargs


def failure(input_id: str, exc: BaseException) -> Output:
    """How input ``input_id`` ended when the user's code raised ``exc``: its pickle,
    for the caller, and a description the server reads instead (payload.dump_failure)."""
    return Output(input_id, OutputStatus.ERROR, payload.dump_failure(exc), False)
