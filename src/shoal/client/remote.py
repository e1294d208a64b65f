"""A function's pool as seen from inside a container: calls go through the control plane.

Code running in a container (a function that calls another, a web endpoint that
awaits one) holds the same handles as any caller. There is no app running in
the container's process, so :meth:`App._pool` hands out a :class:`RemotePool`:
it offers the pool interface the handles use (as ``ServerPool`` does), and
turns each submit into a ``Call`` message over the container's connection. The
control plane runs the input in the named pool and answers with ``CallItem``s
and a ``CallDone``, which this module applies to a local
:class:`~shoal.client.record.CallRecord` on
the background loop, where the handles wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from shoal import settings
from shoal.client.connection import store_spawn
from shoal.client.record import CallRecord
from shoal.client.server_pool import ServerPool
from shoal.context import CallChannel, current_input_id
from shoal.exception import ExecutionError
from shoal.protocol.messages import Accepted, CallDone, CallItem, Submit, Wait
from shoal.spec.function import FunctionSpec


class RemotePool:
    """Submits inputs of function ``name`` through the container's :class:`CallChannel`.

    Calls name ``target``, the function, or for an object of a class the class, with
    the object's pickled ``parameters``.
    """

    def __init__(
        self, name: str, channel: CallChannel, target: str = "", parameters: bytes = b""
    ) -> None:
        self.spec = FunctionSpec(name=name)
        self._channel = channel
        self._target = target or name
        self._parameters = parameters

    def submit(
        self,
        args: bytes,
        on_done: Callable[[CallRecord], None],
        method: str = "",
        on_item: Callable[[bytes], None] | None = None,
    ) -> CallRecord:
        return self.submit_many([args], on_done, method, on_item)[0]

    def submit_many(
        self,
        many: Iterable[bytes],
        on_done: Callable[[CallRecord], None],
        method: str = "",
        on_item: Callable[[bytes], None] | None = None,
    ) -> list[CallRecord]:
        """Start one call per input; each record finishes when its reply arrives (on
        the loop this runs on: the background loop, or a blocking call's helper)."""
        loop = asyncio.get_running_loop()
        records = []
        for args in many:
            record = CallRecord("", on_done, method, on_item, self.spec.name)

            def reply(message: CallItem | CallDone, record: CallRecord = record) -> None:
                loop.call_soon_threadsafe(self._apply, record, message)

            call_id = self._channel.call(
                self._target, method, args, on_item is not None, reply, self._parameters
            )
            record.input_id = call_id
            records.append(record)
        return records

    @property
    def stores_spawns(self) -> bool:
        """Whether spawns from this container are stored (its control plane is a
        server's): ``spawn`` then returns a call any process can fetch by id."""
        return settings.stored_spawns()

    @property
    def connection(self) -> ChannelConnection:
        """The channel, as stored calls use a connection."""
        return ChannelConnection(self._channel)

    async def spawn(self, args: bytes, method: str) -> str:
        """Store one input through the control plane; return its id once it is on disk."""
        connection = self.connection
        parent = current_input_id() or ""
        submit = Submit(
            connection.next_id(),
            "",
            self._target,
            method,
            args,
            False,
            True,
            self._parameters,
            parent,
        )
        return await store_spawn(connection, submit, self.spec.name)

    def _apply(self, record: CallRecord, message: CallItem | CallDone) -> None:
        record.apply(message, f"{self.spec.name} (call {record.input_id})")

    def cancel(self, record: CallRecord) -> None:
        if record.done:
            return
        self._channel.cancel(record.input_id)
        record.cancel()

    def stats(self) -> Any:
        raise ExecutionError("stats() is not available from inside a container")

    def update_scaling(self, **changes: Any) -> None:
        raise ExecutionError("update_autoscaler() is not available from inside a container")

    def credit(self, record: CallRecord, amount: int) -> None:
        raise ExecutionError("web traffic does not flow through calls made in a container")

    def feed(self, record: CallRecord, data: bytes) -> None:
        raise ExecutionError("web traffic does not flow through calls made in a container")


class ChannelConnection:
    """A container's channel to its control plane, offering what stored calls need of a
    connection (:class:`~shoal.client.connection.CallSender`): durable spawns, waits on
    them by id, and their cancellation. The control plane passes them to its server."""

    def __init__(self, channel: CallChannel) -> None:
        self._channel = channel

    def next_id(self) -> str:
        return self._channel.next_id()

    def call(
        self, submit: Submit | Wait, handler: Callable[[CallItem | CallDone | Accepted], None]
    ) -> None:
        loop = asyncio.get_running_loop()

        def deliver(reply: CallItem | CallDone | Accepted) -> None:
            loop.call_soon_threadsafe(handler, reply)

        self._channel.send_call(submit, deliver)

    def drop(self, call_id: str) -> None:
        self._channel.cancel(call_id)

    async def request(self, op: str, **body: Any) -> Any:
        from shoal.client.objects import through_channel  # objects imports the server's store

        return await through_channel(op, body)


#: What a handle submits to: a server's pool, reached through the client's connection
#: (the embedded server's too), or, in a container, the control plane's, reached
#: through the container's connection.
AnyPool = RemotePool | ServerPool
