"""A function's pool as handles see it: inputs over a connection to a control plane.

:class:`ServerPool` is the one pool handles hold, wherever they run: over the
connection to a server (the embedded one, on a pipe, or a ``shoal server``, on a
socket) or, inside a container, over the container's channel to its control plane
(:class:`~shoal.client.remote.ChannelConnection`). It offers the handles what a pool of
their own would: each input is a local :class:`~shoal.client.record.CallRecord` that
the replies finish (on the background loop). Inputs of one function sent in one loop
turn travel as one ``SubmitMany``; a blocking ``.remote()`` or ``.spawn()`` from a plain
thread borrows a line of its own to a server instead (:mod:`shoal.client.direct_line`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from shoal.client import direct_line
from shoal.client.connection import Connection, launch_spawn, store_spawn
from shoal.client.record import CallRecord
from shoal.client.remote import ChannelConnection
from shoal.protocol import payload
from shoal.protocol.messages import Accepted, CallDone, CallItem, Credit, Feed, OutputStatus, Submit
from shoal.spec.function import FunctionSpec
from shoal.spec.log_line import LogLine, log_lines
from shoal.spec.stats import FunctionStats


class ServerPool:
    """A function's pool as a handle sees it: inputs go over the connection.

    Args:
        connection: a server's connection, or a container's channel.
        app: the app the function is in ("" from a container: its own).
        function: what calls name: the function, or for an object of a class the class
            (with the object's pickled ``parameters``).
        name: the pool's name in messages (default: ``function``).
    """

    def __init__(
        self,
        connection: Connection | ChannelConnection,
        app: str,
        function: str,
        parameters: bytes = b"",
        name: str = "",
    ) -> None:
        self.spec = FunctionSpec(name=name or function)
        self.app = app
        self.connection = connection
        self._function = function
        self._parameters = parameters

    @property
    def stores_spawns(self) -> bool:
        """Whether a spawn is stored by id (on a server, the embedded one too, and in a
        container of one), so ``spawn`` returns a call any process can fetch; a container
        of a bare control plane (as a backend's tests run) has no store: its spawns run
        as plain calls."""
        return self.connection.stores_spawns

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
            connection.call_many(self.app, self._function, method, self._parameters, calls)
        return records

    def _submit(
        self, call_id: str, args: bytes, method: str, *, stream: bool = False, durable: bool = False
    ) -> Submit:
        """One input of this pool as the server takes it."""
        function, parameters = self._function, self._parameters
        return Submit(call_id, self.app, function, method, args, stream, durable, parameters)

    def _over_line(self, args: bytes, method: str, durable: bool) -> CallDone | Accepted | None:
        """Send one input over a line of its own to the server and block for the answer
        (see :mod:`shoal.client.direct_line`); None when no line is free."""
        target = self.connection.line_target
        if target is None:
            return None  # a server in this process, or a container's channel: no socket
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
        where = f"{self.app}/" if self.app and not self.connection.local else ""
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
        return f"{self.app}/{self.spec.name}" if self.app else self.spec.name

    def cancel(self, record: CallRecord) -> None:
        if record.done:
            return
        self.connection.drop(record.input_id)
        record.cancel()

    def _body(self) -> dict[str, Any]:
        return {"app": self.app, "function": self._function, "parameters": self._parameters}

    async def fetch_stats(self) -> FunctionStats:
        found = await self.connection.request("stats", **self._body())
        return FunctionStats(**found)

    async def fetch_logs(self, **filters: Any) -> list[LogLine]:
        """This function's lines the server keeps that pass ``filters`` (those of
        ``shoal app logs``: since, until, tail, search, container, input)."""
        given = {key: value for key, value in filters.items() if value is not None}
        answer = await self.connection.request(
            "function_logs", app=self.app or "", function=self._function, **given
        )
        return log_lines(answer)

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
