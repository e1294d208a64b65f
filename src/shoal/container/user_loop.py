"""The event loop user code runs on, apart from the loop that talks to the control plane.

A container has two loops. The runtime's loop reads and writes the control plane's
socket and answers Shoal's own coroutines (the caller-side handles used inside the
container: ``f.remote()``, ``Dict``, ``FunctionCall.get``). This one runs the user's
async code: ``@enter``/``@exit`` hooks, async functions' inputs, web apps. Keeping
them apart means user code may block its loop, by calling a blocking Shoal method
from an ``async def`` as Modal allows, or by plain mistake, and the container still
hears its control plane: the call completes, and timeouts and cancellations arrive.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class UserLoop:
    """A daemon thread running the loop for user code (see the module docstring)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        started = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.call_soon(started.set)
            self.loop.run_forever()

        threading.Thread(target=serve, name="shoal-user-loop", daemon=True).start()
        started.wait()

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the user loop; await its result from another loop."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def call(self, fn: Callable[..., Any], *args: Any) -> None:
        """Call ``fn(*args)`` on the user loop soon (safe from any thread)."""
        self.loop.call_soon_threadsafe(fn, *args)
