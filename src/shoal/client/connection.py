"""The one way a client reaches a server: a framed connection, authenticated first.

Where the server is comes from :mod:`shoal.client.target`. One :class:`Connection`
per process and server lives on the background loop (:mod:`shoal.bridge`); every
handle shares it. Requests (:meth:`Connection.request`) carry msgpack bodies; inputs
travel as ``Submit`` frames (those of one function sent in one loop turn as one
``SubmitMany``) and come back as ``CallItem``/``CallDone`` (or a ``Many`` of those), which the
handles' :class:`~shoal.client.server_pool.ServerPool` applies to its local records.

A connection that drops (the server restarted) connects again when next used,
for up to 30 s: calls made meanwhile wait, and waits on stored spawns that were
in flight are asked again; plain calls in flight fail with ``ConnectionError``.
Blocking ``.remote()`` and ``.spawn()`` from plain threads skip this connection
and its loop: they borrow a line (:mod:`shoal.client.direct_line`).

Ops a server answers: ``ping``, ``deploy``, ``lookup``, ``app_list``,
``app_stop``, ``app_history``, ``container_list``, ``container_stop``,
``stats``, ``update_scaling``, ``call_cancel``.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import ssl
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import msgpack

from shoal import exception, settings
from shoal.client.output import print_lines
from shoal.client.record import CallRecord, reply_error
from shoal.client.target import Target, ensure_embedded, find_target
from shoal.protocol import payload, pipe, transport
from shoal.protocol.framing import FRAME_OVERHEAD, FramedProtocol
from shoal.protocol.messages import (
    Accepted,
    CallCancel,
    CallDone,
    CallItem,
    ClientHello,
    Credit,
    Feed,
    LogLines,
    Many,
    Message,
    OutputStatus,
    Reply,
    Request,
    Submit,
    SubmitMany,
    Wait,
    Welcome,
    settle,
)

#: Seconds to wait for a server's answer to the token.
_HELLO_TIMEOUT = 10.0
#: Seconds a lost connection keeps trying to connect again (a server restarting)
#: before the calls waiting for it fail.
_RECONNECT_PATIENCE = 30.0


class Connection:
    """A client's authenticated connection to one server, on the background loop."""

    def __init__(self, target: Target) -> None:
        self.target = target
        #: Whether the server is the embedded one, in this process, reached over a pipe
        #: instead of a socket.
        self.local = target.url.startswith(pipe.SCHEME)
        self.protocol = self._new_protocol()
        self._welcome: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._ids = itertools.count(1)
        self._requests: dict[int, asyncio.Future[Any]] = {}
        #: Calls waiting for their outcome: call id -> what to do with each reply.
        self._calls: dict[str, Callable[[CallItem | CallDone | Accepted], None]] = {}
        #: Submits of this loop turn not sent yet, grouped by function, to leave in one
        #: ``SubmitMany`` frame per group; and the call ids among them, for ``drop``.
        self._outgoing: dict[tuple[str, str, str, bool, bytes], list[tuple[str, bytes]]] = {}
        self._unsent: set[str] = set()
        #: Calls made while the connection was down (and waits it was carrying), sent
        #: once it is up again.
        self._parked: dict[str, tuple[Submit | Wait, Callable[[Any], None]]] = {}
        #: Waits on stored spawns in flight: re-sent on a new connection if this one drops.
        self._waits: dict[str, tuple[Wait, Callable[[Any], None]]] = {}
        #: Streamed calls (web requests) whose app's credit comes back, by call id.
        self._credited: dict[str, CallRecord] = {}
        self._reopening: asyncio.Future[None] | None = None
        self.closed = False
        self.server_id = ""

    #: A server keeps spawns by id.
    stores_spawns = True

    @property
    def line_target(self) -> Target | None:
        """Where a blocking call may borrow a socket line of its own to this server
        (:mod:`shoal.client.direct_line`); None for the embedded server, on a pipe."""
        return None if self.local else self.target

    def _new_protocol(self) -> FramedProtocol | pipe.PipeEnd:
        over = pipe.PipeEnd if self.local else FramedProtocol
        protocol = over(self._on_message, self._on_lost, 0)
        protocol.parser.max_frame = settings.max_payload_bytes() + FRAME_OVERHEAD
        return protocol

    @classmethod
    async def open(cls, target: Target) -> Connection:
        """Connect and present the token.

        Raises:
            ConnectionError: nothing answers at the target.
            AuthError: the server refused the token.
        """
        connection = cls(target)
        await connection._dial()
        return connection

    async def _dial(self) -> None:
        target = self.target
        try:
            protocol = self.protocol
            if isinstance(protocol, pipe.PipeEnd):
                await ensure_embedded()
                pipe.dial(target.url, protocol)
            else:
                await _open_socket(target.url, protocol)
        except ssl.SSLError as exc:
            raise exception.ConnectionError(
                f"the server at {target.url} ({target.source}) failed the TLS check: {exc}; "
                "a server with a private CA needs SSL_CERT_FILE naming that CA's certificate"
            ) from None
        except OSError as exc:
            raise exception.ConnectionError(
                f"no Shoal server answers at {target.url} ({target.source}): {exc.strerror or exc}"
                "; start one with `shoal server`"
            ) from None
        self.protocol.send(ClientHello(target.token, f"pid {os.getpid()}"))
        try:
            self.server_id = await asyncio.wait_for(self._welcome, _HELLO_TIMEOUT)
        except (TimeoutError, exception.ConnectionError):
            self.protocol.abort()
            raise exception.AuthError(
                f"the server at {target.url} refused the token ({target.source})"
            ) from None

    def _reopen(self) -> asyncio.Future[None]:
        """Connect again after the connection was lost (the server restarted, say):
        once, however many calls ask, trying for :data:`_RECONNECT_PATIENCE` seconds;
        the calls parked meanwhile then leave, or fail with the reason it could not
        connect."""
        if self._reopening is None:
            self._reopening = asyncio.ensure_future(self._redial())
            self._reopening.add_done_callback(_retrieved)
        return self._reopening

    async def _redial(self) -> None:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + _RECONNECT_PATIENCE
        pause = 0.05
        try:
            while True:
                self.protocol = self._new_protocol()
                self._welcome = loop.create_future()
                try:
                    await self._dial()
                    break
                except exception.Error as exc:
                    if loop.time() + pause > give_up:
                        self._fail_parked(exc)
                        raise
                await asyncio.sleep(pause)
                pause = min(2 * pause, 1.0)
        finally:
            self._reopening = None
        self.closed = False
        _connections.setdefault(self.target, self)
        parked, self._parked = self._parked, {}
        for submit, handler in parked.values():
            self.call(submit, handler)

    def _fail_parked(self, error: BaseException) -> None:
        parked, self._parked = self._parked, {}
        _fail(((call_id, handler) for call_id, (_, handler) in parked.items()), error)

    # -- replies ------------------------------------------------------------------

    def _on_message(self, message: Message) -> None:
        if isinstance(message, CallDone | Accepted):  # the common case first
            self._ended(message)
        elif isinstance(message, CallItem):
            handler = self._calls.get(message.call_id)
            if handler is not None:
                handler(message)
        elif isinstance(message, Many):
            for reply in message.each():
                if isinstance(reply, CallDone | Accepted):
                    self._ended(reply)
        elif isinstance(message, Credit):
            self._credit(message)
        elif isinstance(message, Reply):
            self._answered(message)
        elif isinstance(message, LogLines):
            print_lines(message.source, message.stream, message.lines)
        elif isinstance(message, Welcome) and not self._welcome.done():
            self._welcome.set_result(message.server_id)

    def _ended(self, message: CallDone | Accepted) -> None:
        """Hand a call its last reply (a durable spawn's ``Accepted`` ends its call)."""
        handler = self._calls.pop(message.call_id, None)
        if handler is not None:
            if self._credited:
                self._credited.pop(message.call_id, None)
            handler(message)

    def _credit(self, message: Credit) -> None:
        """A web request's app took more of what the gateway here sends it."""
        record = self._credited.get(message.input_id)
        if record is not None and record.on_credit is not None:
            record.on_credit(message.amount)

    def _answered(self, message: Reply) -> None:
        future = self._requests.pop(message.request_id, None)
        if future is not None:
            settle(future, message)

    def _on_lost(self, exc: BaseException | None) -> None:
        lost = exception.ConnectionError(
            f"the connection to the server at {self.target.url} closed"
        )
        if not self._welcome.done():
            self._welcome.set_exception(lost)
        if self.closed:
            return  # lost while connecting again: the calls waiting for it are parked
        self.closed = True
        for future in self._requests.values():
            if not future.done():
                future.set_exception(lost)
        self._requests.clear()
        calls, self._calls = self._calls, {}
        self._credited.clear()
        self._outgoing.clear()
        self._unsent.clear()
        waits, self._waits = self._waits, {}
        for call_id, (wait, handler) in waits.items():  # asking again is harmless
            if calls.pop(call_id, None) is not None:
                self._parked[call_id] = (wait, handler)
        if self._parked:
            self._reopen()
        _fail(calls.items(), lost)
        if _connections.get(self.target) is self:
            del _connections[self.target]

    # -- requests and calls ------------------------------------------------------------

    async def request(self, op: str, **body: Any) -> Any:
        """Send control request ``op`` and return the server's answer.

        A connection that was lost connects again first.

        Raises:
            NotFoundError, InvalidError, ...: as the server raised it.
            ConnectionError: the connection closed first, or cannot be made again.
        """
        if self.closed:
            await asyncio.shield(self._reopen())
        request_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._requests[request_id] = future
        self.protocol.send(Request(request_id, op, msgpack.packb(body, use_bin_type=True)))
        return await future

    def call(
        self, submit: Submit | Wait, handler: Callable[[CallItem | CallDone | Accepted], None]
    ) -> None:
        """Send ``submit`` (or a wait); ``handler`` gets each reply to its call id. On a
        connection that was lost, the call waits for it to connect again."""
        if self.closed:
            self._parked[submit.call_id] = (submit, handler)
            self._reopen()
            return
        if isinstance(submit, Wait):
            self._calls[submit.call_id] = self._waits_for(submit, handler)
            self.protocol.send(submit)
            return
        self._calls[submit.call_id] = handler
        if submit.stream or self.local:  # a pipe gains nothing from batching
            self.protocol.send(submit)
            return
        key = (submit.app, submit.function, submit.method, submit.durable, submit.parameters)
        if not self._outgoing:
            asyncio.get_running_loop().call_soon(self._send_outgoing)
        self._outgoing.setdefault(key, []).append((submit.call_id, submit.args))
        self._unsent.add(submit.call_id)

    def call_many(
        self,
        app: str,
        function: str,
        method: str,
        parameters: bytes,
        calls: list[tuple[str, bytes, Callable[[CallItem | CallDone | Accepted], None]]],
    ) -> None:
        """:meth:`call` for plain inputs of one function (a map's chunk): ``calls`` are
        (call id, pickled arguments, handler); they leave in this loop turn's
        ``SubmitMany`` with no ``Submit`` made for each."""
        if self.closed:
            for call_id, args, handler in calls:
                submit = Submit(call_id, app, function, method, args, False, False, parameters)
                self.call(submit, handler)
            return
        handlers = self._calls
        if self.local:  # a pipe gains nothing from batching: the chunk goes as it is
            for call_id, _, handler in calls:
                handlers[call_id] = handler
            ids, many = [c for c, _, _ in calls], [a for _, a, _ in calls]
            self.protocol.send(SubmitMany(ids, app, function, method, many, False, parameters))
            return
        if not self._outgoing:
            asyncio.get_running_loop().call_soon(self._send_outgoing)
        pending = self._outgoing.setdefault((app, function, method, False, parameters), [])
        unsent = self._unsent
        for call_id, args, handler in calls:
            handlers[call_id] = handler
            pending.append((call_id, args))
            unsent.add(call_id)

    def _waits_for(
        self, wait: Wait, handler: Callable[[CallItem | CallDone | Accepted], None]
    ) -> Callable[[CallItem | CallDone | Accepted], None]:
        """Keep ``wait`` until it is answered (to ask again on a new connection)."""
        self._waits[wait.call_id] = (wait, handler)

        def answered(message: CallItem | CallDone | Accepted) -> None:
            self._waits.pop(wait.call_id, None)
            handler(message)

        return answered

    def _send_outgoing(self) -> None:
        outgoing, self._outgoing = self._outgoing, {}
        unsent, self._unsent = self._unsent, set()
        for (app, function, method, durable, parameters), pairs in outgoing.items():
            kept = [pair for pair in pairs if pair[0] in unsent]  # dropped ones are not
            if len(kept) == 1:
                call_id, args = kept[0]
                self.protocol.send(
                    Submit(call_id, app, function, method, args, False, durable, parameters)
                )
            elif kept:
                self.protocol.send(
                    SubmitMany(
                        [call_id for call_id, _ in kept],
                        app,
                        function,
                        method,
                        [args for _, args in kept],
                        durable,
                        parameters,
                    )
                )

    def drop(self, call_id: str) -> None:
        """Cancel call ``call_id`` (or stop waiting on it)."""
        self._waits.pop(call_id, None)
        self._credited.pop(call_id, None)
        if self._parked.pop(call_id, None) is not None:
            return  # not sent on this connection
        if self._calls.pop(call_id, None) is None:
            return
        if call_id in self._unsent:  # not sent yet: it never will be
            self._unsent.discard(call_id)
        else:
            self.protocol.send(CallCancel(call_id))

    def credited(self, record: CallRecord) -> None:
        """Hand ``record`` (a streamed call) the credit its app grants, as it comes."""
        self._credited[record.input_id] = record

    def tell(self, message: Feed | Credit) -> None:
        """Send what a running call's web request passes on (see ``Session._pass_on``),
        after the call's own submit."""
        if self.closed:
            return  # the call failed with the connection
        if message.input_id in self._unsent:
            self._send_outgoing()
        self.protocol.send(message)

    def next_id(self) -> str:
        return f"c{next(self._ids)}"

    def close(self) -> None:
        self.protocol.close()


class CallSender(Protocol):
    """What a durable spawn or a wait needs of a connection (a server's, or a
    container's channel to its control plane)."""

    def next_id(self) -> str: ...

    def call(
        self, submit: Submit | Wait, handler: Callable[[CallItem | CallDone | Accepted], None]
    ) -> None: ...

    def drop(self, call_id: str) -> None: ...

    async def request(self, op: str, **body: Any) -> Any: ...


async def store_spawn(connection: CallSender, submit: Submit, context: str) -> str:
    """Send durable ``submit``; return the stored input's id once it is on disk.

    Raises:
        The error it was refused with (``NotFoundError`` for an unknown function).
    """
    accepted: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    launch_spawn(connection, submit, context, accepted)
    return await accepted


def launch_spawn(
    connection: CallSender, submit: Submit, context: str, accepted: asyncio.Future[str]
) -> None:
    """Send durable ``submit``; settle ``accepted`` with the stored input's id once it
    is on disk, or with the error it was refused with."""

    def reply(message: CallItem | CallDone | Accepted) -> None:
        if accepted.done():
            return
        if isinstance(message, Accepted):
            accepted.set_result(message.object_id)
        elif isinstance(message, CallDone):
            accepted.set_exception(payload.load_exception(message.data, context))

    connection.call(submit, reply)


async def _open_socket(url: str, protocol: FramedProtocol) -> None:
    """Connect ``protocol`` to the server at ``url`` (a Unix socket, TCP or TLS).

    Raises:
        OSError: nothing answers there; ssl.SSLError: its certificate failed the check.
    """
    loop = asyncio.get_running_loop()
    kind, host, port = transport.parse(url)
    if kind == "unix":
        await loop.create_unix_connection(lambda: protocol, host)
        return
    tls = transport.client_tls() if kind == "tls" else None
    connected, _ = await loop.create_connection(lambda: protocol, host, port, ssl=tls)
    sock = connected.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _fail(
    calls: Iterable[tuple[str, Callable[[CallItem | CallDone | Accepted], None]]],
    error: BaseException,
) -> None:
    """End each of ``calls`` (call id, handler) with ``error``."""
    data = payload.dump_error(error)
    for call_id, handler in calls:
        handler(CallDone(call_id, OutputStatus.ERROR, data))


def _retrieved(task: asyncio.Future[None]) -> None:
    """Mark a reconnection's failure as seen: the parked calls were told of it."""
    if not task.cancelled():
        task.exception()


#: Open connections of this process, by target (used on the background loop only).
_connections: dict[Target, Connection] = {}


async def connect(target: Target | None = None) -> Connection:
    """The shared connection to ``target`` (default: :func:`find_target`'s), opened on
    first use. Runs on the background loop.

    Raises:
        ConnectionError: no server is configured or running, or it does not answer.
        AuthError: the server refused the token.
    """
    target = target or find_target()
    if target is None:
        raise exception.ConnectionError(
            "no Shoal server to talk to: start one with `shoal server`, or set "
            "SHOAL_SERVER_URL and SHOAL_TOKEN (or `shoal token set --url ... --token ...`)"
        )
    connection = _connections.get(target)
    if connection is None or connection.closed:
        connection = await Connection.open(target)
        _connections[target] = connection
    return connection


def stored_outcome(message: CallDone, context: str) -> Any:
    """The value of a stored call's outcome, or raise its error."""
    error = reply_error(message, context)
    if error is not None:
        raise error
    return payload.loads(message.data, f"result of {context}")
