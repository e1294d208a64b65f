"""A deployed function's pool as a client's handles see it: inputs over a connection.

:class:`ServerPool` offers the handles what a pool of their own would: each input is
a local :class:`~shoal.client.record.CallRecord` that the server's replies finish
(on the background loop). Inputs of one function sent in one loop turn travel as one
``SubmitMany``; a blocking ``.remote()`` or ``.spawn()`` from a plain thread borrows a
line of its own instead (:mod:`shoal.client.direct_line`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from shoal.client import direct_line
from shoal.client.connection import Connection, launch_spawn, store_spawn
from shoal.client.record import CallRecord
from shoal.protocol import payload
from shoal.protocol.messages import Accepted, CallDone, CallItem, Credit, Feed, OutputStatus, Submit
from shoal.spec.function import FunctionSpec
from shoal.spec.stats import FunctionStats


class ServerPool:
    """A deployed function's pool as a handle sees it: inputs go over the connection.

    Offers what handles use of :class:`~shoal.control.pool.Pool`; each input is a
    local record that the server's replies finish (on the background loop).
    """

    def __init__(
        self, connection: Connection, app: str, function: str, parameters: bytes = b""
    ) -> None:
        self.spec = FunctionSpec(name=function)
        self.app = app
        self.connection = connection
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
        connection = self.connection
        records = []
        calls = []
        name = self.spec.name
        next_id, applier = connection.next_id, self._applier
        for args in many:
            call_id = next_id()
            record = CallRecord(call_id, on_done, method, on_item, name)
            records.append(record)
            if on_item is None:
                calls.append((call_id, args, applier(record)))
            else:  # a generator or web request: sent at once, on its own
                connection.call(self._submit(call_id, args, method, stream=True), applier(record))
                connection.credited(record)  # a web request's app grants credit back
        if calls:
            connection.call_many(self.app, name, method, self._parameters, calls)
        return records

    def _submit(
        self, call_id: str, args: bytes, method: str, *, stream: bool = False, durable: bool = False
    ) -> Submit:
        """One input of this pool as the server takes it."""
        name, parameters = self.spec.name, self._parameters
        return Submit(call_id, self.app, name, method, args, stream, durable, parameters)

    def _over_line(self, args: bytes, method: str, durable: bool) -> CallDone | Accepted | None:
        """Send one input over a line of its own to the server and block for the answer
        (see :mod:`shoal.client.direct_line`); None when no line is free."""
        if self.connection.local:
            return None  # the server is in this process: there is no socket to borrow
        target = self.connection.target
        line = direct_line.borrow(target.url, target.token)
        if line is None:
            return None
        try:
            return line.exchange(self._submit(line.next_id(), args, method, durable=durable))
        finally:
            direct_line.give_back(line)

    def call_on_line(self, args: bytes, method: str) -> CallRecord | None:
        """Run one input over a line and block until it ends; None when no line is free
        (then :meth:`submit` it through the shared connection)."""
        reply = self._over_line(args, method, durable=False)
        if reply is None:
            return None
        assert isinstance(reply, CallDone)  # only a durable submit is answered otherwise
        record = CallRecord(reply.call_id, _ignore_record, method, None, self.spec.name)
        record.apply(reply, self._describe(record))
        return record

    def spawn_on_line(self, args: bytes, method: str) -> str | None:
        """Store one input over a line; return its id once it is on disk, or None when
        no line is free (then :meth:`spawn` it).

        Raises:
            The error it was refused with (``NotFoundError`` for an unknown function).
        """
        reply = self._over_line(args, method, durable=True)
        if reply is None:
            return None
        if isinstance(reply, Accepted):
            return reply.object_id
        raise payload.load_exception(reply.data, self._context())

    def _applier(self, record: CallRecord) -> Callable[[CallItem | CallDone | Accepted], None]:
        def apply(message: CallItem | CallDone | Accepted) -> None:
            if isinstance(message, CallDone) and message.status == OutputStatus.OK:
                if not record.done:  # the usual case, which needs no description
                    record.succeed(message.data)
            elif not isinstance(message, Accepted):  # a plain call is never stored
                record.apply(message, self._describe(record))

        return apply

    def _describe(self, record: CallRecord) -> str:
        name = f"{self.spec.name}.{record.method}" if record.method else self.spec.name
        where = "" if self.connection.local else f"{self.app}/"
        return f"{where}{name} (call {record.input_id})"

    async def spawn(self, args: bytes, method: str) -> str:
        """Store one input on the server; return its id once it is on disk."""
        submit = self._submit(self.connection.next_id(), args, method, durable=True)
        return await store_spawn(self.connection, submit, self._context())

    def launch_spawn(self, args: bytes, method: str, accepted: asyncio.Future[str]) -> None:
        """:meth:`spawn` that settles ``accepted`` instead of returning (on the loop)."""
        submit = self._submit(self.connection.next_id(), args, method, durable=True)
        launch_spawn(self.connection, submit, self._context(), accepted)

    def _context(self) -> str:
        return f"{self.app}/{self.spec.name}"

    def cancel(self, record: CallRecord) -> None:
        if record.done:
            return
        self.connection.drop(record.input_id)
        record.cancel()

    def _body(self) -> dict[str, Any]:
        return {"app": self.app, "function": self.spec.name, "parameters": self._parameters}

    async def fetch_stats(self) -> FunctionStats:
        found = await self.connection.request("stats", **self._body())
        return FunctionStats(**found)

    async def change_scaling(self, **changes: Any) -> None:
        await self.connection.request("update_scaling", changes=changes, **self._body())

    def credit(self, record: CallRecord, amount: int) -> None:
        """Let a web request's streamed response send ``amount`` more bytes (the reader
        took them)."""
        if not record.done:
            self.connection.tell(Credit(record.input_id, amount))

    def feed(self, record: CallRecord, data: bytes) -> None:
        """Pass on a chunk of a web request's streamed body (empty: the end)."""
        if not record.done:
            self.connection.tell(Feed(record.input_id, data))


def _ignore_record(record: CallRecord) -> None:
    """A line's caller reads the record once the call returns; nothing waits on it."""
