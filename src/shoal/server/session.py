"""One client connection to a server: authenticated first, then calls and requests.

Until the client's first frame proves it holds an access token
(``ClientHello``), a session reads at most one small frame, for at most
SHOAL_HANDSHAKE_TIMEOUT seconds, and unpickles nothing; anything else closes
the connection. After it:

- ``Submit`` runs one input of a deployed function, ``SubmitMany`` several (a
  chunk of a map in one frame). Submits that arrive in one read are queued per
  pool with one ``submit_many``, so a map costs one dispatch and one scaling
  decision per batch, not per input. The outcome goes back as ``CallItem``s and
  a ``CallDone``; outcomes that end in one loop turn share one ``DoneMany``
  frame. A durable submit is stored first (:mod:`shoal.server.spawns`) and
  answered with ``Accepted``.
- ``Wait`` answers once a stored spawn has an outcome; ``CallCancel`` cancels a
  call (or drops a wait); ``Feed`` and ``Credit`` pass on a web request's
  streamed body and its reader's credit to the call serving it (a gateway in the
  client's process, as ``shoal serve`` runs on the embedded server).
- ``Request`` carries the control operations (:class:`shoal.server.server.Server`
  answers them), with msgpack bodies.

When the client goes away, its calls are cancelled (they have no one to answer
to); its durable spawns run on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from shoal import settings
from shoal.control.calls import InputRecord, outcome_message
from shoal.control.pool import Pool
from shoal.control.server import wait_on_spawn
from shoal.exception import Error, ExecutionError
from shoal.protocol import payload
from shoal.protocol.framing import FRAME_OVERHEAD, FramedProtocol, after_read, after_turn
from shoal.protocol.messages import (
    Accepted,
    AcceptedMany,
    CallCancel,
    CallDone,
    CallItem,
    ClientHello,
    Credit,
    DoneMany,
    Feed,
    LogLines,
    Message,
    OutputStatus,
    Request,
    Submit,
    SubmitMany,
    Wait,
    Welcome,
    answer_request,
)
from shoal.protocol.pipe import PipeEnd

if TYPE_CHECKING:
    from shoal.server.server import Server

#: A pending batch of submits for one pool: (pool, method, stream) -> (call id, args).
_BatchKey = tuple[Pool, str, bool]


class Session:
    """One client's connection (see the module docstring)."""

    def __init__(
        self, server: Server, over: type[FramedProtocol | PipeEnd] = FramedProtocol
    ) -> None:
        self._server = server
        self.authenticated = False
        #: A socket's framed connection, or a pipe from a client in this process.
        self.protocol = over(self._on_message, self._on_lost, FRAME_OVERHEAD)
        #: On a pipe nothing is gained by batching per loop turn (no frames, no system
        #: calls), so submits are queued in their pools, and outcomes sent, at once;
        #: except an outcome known while a submit is being taken, which waits for the
        #: loop's next turn (the client is still inside its call then).
        self._piped = over is PipeEnd
        self._taking = False
        #: Calls this client made that have not ended, by call id.
        self._calls: dict[str, tuple[Pool, InputRecord]] = {}
        #: The call id of each of those records.
        self._call_ids: dict[InputRecord, str] = {}
        #: Waits on stored spawns, by call id: how to drop each.
        self._waits: dict[str, Callable[[], None]] = {}
        self._batch: dict[_BatchKey, list[tuple[str, bytes]]] = {}
        #: Outcomes to send at the end of this loop turn.
        self._outcomes: list[CallDone] = []
        #: Durable inputs stored in this loop turn: (call id, object id), told in one frame.
        self._stored: list[tuple[str, str]] = []
        self._durable: list[Submit] = []
        self._tasks: set[asyncio.Task[None]] = set()
        #: Ephemeral apps this client runs: they end when it goes away.
        self._apps: set[str] = set()
        #: How to stop hearing each of those apps' output.
        self._unwatch: dict[str, Callable[[], None]] = {}
        #: Ephemeral Dicts and Queues this client made (dropped when it goes).
        self._objects: set[str] = set()
        self._deadline: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            settings.handshake_timeout(), self._handshake_expired
        )

    # -- authentication ---------------------------------------------------------

    def _handshake_expired(self) -> None:
        self._deadline = None
        if not self.authenticated:
            self.protocol.abort()

    def _hello(self, message: Message) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if isinstance(message, ClientHello) and self._server.authorize(message.token):
            self.authenticated = True
            self.protocol.parser.max_frame = settings.max_payload_bytes() + FRAME_OVERHEAD
            self.protocol.send(Welcome(self._server.server_id))
        else:
            self.protocol.abort()  # nothing more is read from a peer that did not prove itself

    def own(self, app_id: str) -> None:
        """Tie ephemeral app ``app_id`` to this client: it ends when the client goes."""
        self._apps.add(app_id)

    def disown(self, app_id: str) -> None:
        self._apps.discard(app_id)
        unwatch = self._unwatch.pop(app_id, None)
        if unwatch is not None:
            unwatch()

    def watch_output(self, app_id: str) -> None:
        """Send this client what app ``app_id``'s containers print, as they print it
        (``shoal run`` shows it as it would show a local container's)."""
        if app_id not in self._unwatch:
            self._unwatch[app_id] = self._server.logs.watch(app_id, self._send_lines)

    def _send_lines(self, source: str, stream: str, lines: list[str]) -> None:
        self.protocol.send(LogLines(source, stream, lines))

    def build_log(self, line: str) -> None:
        """Send this client one line of an image build it waits for."""
        self.protocol.send(LogLines("", "stdout", [line]))

    def own_object(self, name: str) -> None:
        """Tie ephemeral Dict or Queue ``name`` to this client: it goes when the client goes."""
        self._objects.add(name)

    # -- messages -----------------------------------------------------------------

    def _on_message(self, message: Message) -> None:
        if not self.authenticated:
            self._hello(message)
        elif isinstance(message, Submit | SubmitMany):
            self._queue(message)
        elif isinstance(message, CallCancel):
            self._cancel(message.call_id)
        elif isinstance(message, Wait):
            self._wait(message)
        elif isinstance(message, Request):
            self._request(message)
        elif isinstance(message, Feed | Credit):
            self._pass_on(message)
        else:
            self.protocol.abort()  # a client has no business sending anything else

    def _queue(self, message: Submit | SubmitMany) -> None:
        if not self._piped:
            if not self._batch and not self._durable:
                after_read(self._submit_batches)
            self._take(message)
            return
        self._taking = True
        try:
            self._take(message)
            self._submit_batches()
        finally:
            self._taking = False

    def _take(self, message: Submit | SubmitMany) -> None:
        """Add ``message``'s inputs to the batch of their pool (or of durable inputs)."""
        if isinstance(message, Submit):
            call_ids, args = [message.call_id], [message.args]
            stream = message.stream
        else:
            call_ids, args, stream = list(message.call_ids), list(message.args), False
            if len(call_ids) != len(args):
                self.protocol.abort()  # a malformed frame: the client is broken
                return
        if message.durable:
            self._durable += [
                Submit(
                    c,
                    message.app,
                    message.function,
                    message.method,
                    a,
                    False,
                    True,
                    message.parameters,
                )
                for c, a in zip(call_ids, args, strict=True)
            ]
            return
        try:
            pool = self._server.pool_for(message.app, message.function, message.parameters)
        except Error as exc:
            for call_id in call_ids:
                self._refused(call_id, exc)
            return
        self._batch.setdefault((pool, message.method, stream), []).extend(
            zip(call_ids, args, strict=True)
        )

    def _submit_batches(self) -> None:
        batch, self._batch = self._batch, {}
        durable, self._durable = self._durable, []
        if durable:
            self._server.spawns.submit_many(durable, self._accepted, self._refused)
        for (pool, method, stream), inputs in batch.items():
            try:
                if stream:  # one generator per submit: each needs its own item sender
                    records = [
                        pool.submit(args, self._done, method, self._item_sender(call_id))
                        for call_id, args in inputs
                    ]
                    for (call_id, _), record in zip(inputs, records, strict=True):
                        record.on_credit = self._credit_sender(call_id)
                else:
                    records = pool.submit_many([args for _, args in inputs], self._done, method)
            except ExecutionError as exc:
                for call_id, _ in inputs:
                    self._refused(call_id, exc)
                continue
            for (call_id, _), record in zip(inputs, records, strict=True):
                if record.done:
                    self._reply(call_id, record)
                else:
                    self._calls[call_id] = (pool, record)
                    self._call_ids[record] = call_id

    def _done(self, record: InputRecord) -> None:
        call_id = self._call_ids.pop(record, None)
        if call_id is not None and self._calls.pop(call_id, None) is not None:
            self._reply(call_id, record)

    def _item_sender(self, call_id: str) -> Callable[[bytes], None]:
        def item(data: bytes) -> None:
            self.protocol.send(CallItem(call_id, data))

        return item

    def _credit_sender(self, call_id: str) -> Callable[[int], None]:
        """Tell the client that a web request's app took more of its body (the gateway
        sending it waits for this credit)."""

        def credit(amount: int) -> None:
            self.protocol.send(Credit(call_id, amount))

        return credit

    def _reply(self, call_id: str, record: InputRecord) -> None:
        self._send_done(outcome_message(call_id, record))
        record.result = None  # delivered

    def _send_done(self, outcome: CallDone) -> None:
        """Send ``outcome`` with the others that end in this loop turn (one ``DoneMany``
        frame for all of them); on a pipe, at once (see ``_piped``)."""
        if self._piped and not self._taking:
            self.protocol.send(outcome)
            return
        if not self._outcomes:
            after_turn(self._send_outcomes)
        self._outcomes.append(outcome)

    def _send_outcomes(self) -> None:
        outcomes, self._outcomes = self._outcomes, []
        if len(outcomes) == 1:
            self.protocol.send(outcomes[0])
        elif outcomes:
            self.protocol.send(
                DoneMany(
                    [o.call_id for o in outcomes],
                    [int(o.status) for o in outcomes],
                    [o.data for o in outcomes],
                )
            )

    def _refused(self, call_id: str, error: BaseException) -> None:
        self._send_done(CallDone(call_id, OutputStatus.ERROR, payload.dump_error(error)))

    def _accepted(self, call_id: str, object_id: str) -> None:
        """Tell the client, with the others stored in this loop turn (one frame; on a
        pipe, at once: a commit's callback, never inside the client's call)."""
        if self._piped:
            self.protocol.send(Accepted(call_id, object_id))
            return
        if not self._stored:
            after_turn(self._send_stored)
        self._stored.append((call_id, object_id))

    def _send_stored(self) -> None:
        stored, self._stored = self._stored, []
        if len(stored) == 1:
            self.protocol.send(Accepted(*stored[0]))
        elif stored:
            self.protocol.send(AcceptedMany([c for c, _ in stored], [o for _, o in stored]))

    def _cancel(self, call_id: str) -> None:
        entry = self._calls.pop(call_id, None)
        if entry is not None:
            pool, record = entry
            self._call_ids.pop(record, None)
            pool.cancel(record)
        drop = self._waits.pop(call_id, None)
        if drop is not None:
            drop()

    def _pass_on(self, message: Feed | Credit) -> None:
        """A chunk of a web request's body, or credit from its reader, for the call it is
        part of (a gateway in the client's process serving through this server)."""
        if self._batch:
            self._submit_batches()  # the call may have come in this same read
        entry = self._calls.get(message.input_id)
        if entry is None:
            return  # that call has ended
        pool, record = entry
        if isinstance(message, Feed):
            pool.feed(record, message.data)
        else:
            pool.credit(record, message.amount)

    def _wait(self, message: Wait) -> None:
        wait_on_spawn(self._server.spawns, message, self._waits, self.protocol.send)

    def _request(self, message: Request) -> None:
        task = asyncio.get_running_loop().create_task(self._answer(message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, message: Request) -> None:
        self.protocol.send(
            await answer_request(message, lambda op, body: self._server.handle(op, body, self))
        )

    def _on_lost(self, exc: BaseException | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._batch.clear()
        self._durable.clear()
        for call_id in list(self._calls):  # no one to answer to
            self._cancel(call_id)
        for call_id in list(self._waits):
            self._cancel(call_id)
        for task in self._tasks:
            task.cancel()
        for app_id in self._apps:  # a detached one drains first
            self._server.apps.finish(app_id)
        self._apps.clear()
        for unwatch in self._unwatch.values():
            unwatch()
        self._unwatch.clear()
        for name in self._objects:
            self._server.objects.drop(name)
        self._objects.clear()
        self._server.forget(self)
