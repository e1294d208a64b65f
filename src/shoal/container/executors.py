"""Runs inputs of one function: on a pool of threads (sync) or as asyncio tasks (async).

The per-input lifecycle is written once in :meth:`Executor._run`: take a slot,
unpickle the arguments, call under the function's timeout, pickle the outcome and
send it. Only the call itself differs: an async function is awaited on the
container's loop; a sync one runs on one of ``max_inputs`` threads, where its
return value is also pickled, off the loop.

A thread cannot be stopped. When a sync input times out, its output says
``stuck=True`` and the control plane replaces the container once its other inputs
finish. A cancelled sync input runs to its end and is then reported CANCELLED, so
its slot is not given away while its thread still runs.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from shoal.container.context import current_input
from shoal.container.slots import Slots
from shoal.protocol import payload
from shoal.protocol.messages import Input, Output, OutputStatus


def is_async_callable(obj: Any) -> bool:
    """Whether calling ``obj`` returns a coroutine, looking through partials and
    callable objects (``functools.partial(async_fn)``, an instance with ``async def __call__``).
    """
    while isinstance(obj, functools.partial):
        obj = obj.func
    if inspect.iscoroutinefunction(obj):
        return True
    call = getattr(obj, "__call__", None)  # noqa: B004 - callable objects, not callability
    return call is not None and not inspect.isfunction(obj) and inspect.iscoroutinefunction(call)


def _call_and_pickle(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> bytes:
    return payload.dumps(fn(*args, **kwargs), "return value")


class Executor:
    """Runs the inputs of one function inside a container.

    Args:
        fn: the user's function.
        max_inputs: inputs that may run at once (threads for a sync function).
        timeout: seconds each input may run.
        send: delivers an :class:`Output` to the control plane.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        max_inputs: int,
        timeout: float,
        send: Callable[[Output], None],
    ) -> None:
        self._fn = fn
        self._timeout = timeout
        self._send = send
        self.slots = Slots(max_inputs)
        self._is_async = is_async_callable(fn)
        self._threads = (
            None
            if self._is_async
            else ThreadPoolExecutor(max_workers=max_inputs, thread_name_prefix="shoal-input")
        )
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._cancelled: set[str] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    def submit(self, message: Input) -> None:
        """Start running ``message``; its output is sent when it ends."""
        self._idle.clear()
        task = asyncio.get_running_loop().create_task(self._run(message))
        self._tasks[message.input_id] = task
        task.add_done_callback(lambda _: self._forget(message.input_id))

    def cancel(self, input_id: str) -> None:
        """Stop ``input_id``: cancel its task, or mark its thread's result to be dropped."""
        task = self._tasks.get(input_id)
        if task is None:
            return
        if self._is_async:
            task.cancel()
        else:
            self._cancelled.add(input_id)

    async def drain(self) -> None:
        """Return when no input is running."""
        await self._idle.wait()

    def _forget(self, input_id: str) -> None:
        self._tasks.pop(input_id, None)
        self._cancelled.discard(input_id)
        if not self._tasks:
            self._idle.set()

    async def _run(self, message: Input) -> None:
        await self.slots.acquire()
        current_input.set(message.input_id)
        status, data, stuck = OutputStatus.OK, b"", False
        try:
            args, kwargs = payload.loads(message.args, "arguments")
            async with asyncio.timeout(self._timeout) as deadline:
                data = await self._call(args, kwargs)
        except asyncio.CancelledError:
            status = OutputStatus.CANCELLED
        except TimeoutError as exc:
            if deadline.expired():
                status, stuck = OutputStatus.TIMEOUT, not self._is_async
            else:
                status, data = OutputStatus.ERROR, payload.dump_exception(exc)
        except BaseException as exc:  # the user's error, whatever it is, goes to the caller
            status, data = OutputStatus.ERROR, payload.dump_exception(exc)
        finally:
            self.slots.release()
        if message.input_id in self._cancelled:
            status, data = OutputStatus.CANCELLED, b""
        self._send(Output(message.input_id, int(status), data, stuck))

    async def _call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
        if self._threads is None:
            return payload.dumps(await self._fn(*args, **kwargs), "return value")
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()
        return await loop.run_in_executor(
            self._threads, context.run, _call_and_pickle, self._fn, args, kwargs
        )
