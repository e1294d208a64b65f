"""A container's channel to its control plane, as the connection handles call through.

Code running in a container (a function that calls another, a web endpoint that
awaits one) holds the same handles as any caller, and its calls travel the same way:
a :class:`~shoal.client.server_pool.ServerPool` over a connection. Here that connection
is :class:`ChannelConnection`, the container's :class:`~shoal.context.CallChannel`: it
sends the very ``Submit``/``SubmitMany``/``Wait``/``CallCancel`` a client sends a
server, which the control plane takes with the same code it takes a client's with
(:mod:`shoal.control.intake`); the container's own token decides what they reach (its
own app's functions, spawns and calls). Replies arrive on the container runtime's loop
and are handed to the loop that made the call.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any

from shoal import settings
from shoal.client.objects import through_channel
from shoal.client.record import CallRecord
from shoal.context import CallChannel, current_input_id
from shoal.exception import ExecutionError
from shoal.protocol.messages import Accepted, CallDone, CallItem, Credit, Feed, Submit, Wait

#: What a reply to a call is handed to.
Handler = Callable[[CallItem | CallDone | Accepted], None]


class ChannelConnection:
    """A container's channel to its control plane, offering what a
    :class:`~shoal.client.server_pool.ServerPool` needs of a connection."""

    #: No socket line can be borrowed: calls go through the channel.
    line_target = None
    #: Calls name no app: the container's identity names its own.
    local = True

    def __init__(self, channel: CallChannel) -> None:
        self._channel = channel

    @property
    def stores_spawns(self) -> bool:
        """Whether spawns from this container are stored (its control plane is a
        server's): ``spawn`` then returns a call any process can fetch by id."""
        return settings.stored_spawns()

    def next_id(self) -> str:
        return self._channel.next_id()

    def call(self, submit: Submit | Wait, handler: Handler) -> None:
        """Send ``submit`` (or a wait); ``handler`` gets each reply on this loop. A
        submit made while an input runs names that input as its parent."""
        if isinstance(submit, Submit) and not submit.parent:
            submit = dataclasses.replace(submit, parent=current_input_id() or "")
        self._channel.send_call(submit, self._on_loop(handler))

    def call_many(
        self,
        app: str,
        function: str,
        method: str,
        parameters: bytes,
        calls: list[tuple[str, bytes, Handler]],
    ) -> None:
        """:meth:`call` for plain inputs of one function: one ``SubmitMany`` frame."""
        on_loop = self._on_loop
        self._channel.send_many(
            [(call_id, args, on_loop(handler)) for call_id, args, handler in calls],
            app,
            function,
            method,
            parameters,
            current_input_id() or "",
        )

    @staticmethod
    def _on_loop(handler: Handler) -> Handler:
        loop = asyncio.get_running_loop()

        def deliver(reply: CallItem | CallDone | Accepted) -> None:
            loop.call_soon_threadsafe(handler, reply)

        return deliver

    def drop(self, call_id: str) -> None:
        self._channel.cancel(call_id)

    async def request(self, op: str, **body: Any) -> Any:
        """Send ``op`` to the control plane (which answers only what a container may ask).

        Raises:
            InvalidError: the op is not one code in a container may use.
        """
        return await through_channel(op, body)

    def credited(self, record: CallRecord) -> None:
        """Web requests do not flow through calls made in a container: no credit comes."""

    def tell(self, message: Feed | Credit) -> None:
        raise ExecutionError("web traffic does not flow through calls made in a container")
