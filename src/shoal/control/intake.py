"""Calls a peer makes: one path into the pools for a client and for code in a container.

A client of a server (through :mod:`shoal.server.session`) and user code inside a
container (through its connection, :mod:`shoal.control.server`) send the same
messages and are answered the same way:

- ``Submit`` runs one input, ``SubmitMany`` several of one function (a map's chunk).
  Submits that arrive in one read are queued per pool with one ``submit_many``, so a
  map costs one dispatch and one scaling decision per batch, not per input. The
  outcome goes back as ``CallItem``s and a ``CallDone``; outcomes that end in one loop
  turn share one batch frame. A durable submit is stored first and answered with
  ``Accepted`` (a batch frame, likewise, for those stored in one commit).
- ``Wait`` answers once a stored spawn has an outcome; ``CallCancel`` cancels a call
  (or drops a wait); ``Feed`` and ``Credit`` pass on a web request's streamed body and
  its reader's credit to the call serving it.

What a peer may reach is its :class:`Identity`'s to say: a client holding the
server's token reaches every deployed app; a container reaches its own app's
functions, spawns and calls only. The peer's calls end with its connection (they
have no one to answer to); its durable spawns run on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Protocol

from shoal.control.calls import InputRecord, outcome_message
from shoal.control.pool import Pool
from shoal.control.spawned import nothing
from shoal.exception import Error, ExecutionError
from shoal.protocol import payload
from shoal.protocol.framing import after_read, after_turn
from shoal.protocol.messages import (
    Accepted,
    CallCancel,
    CallDone,
    CallItem,
    Credit,
    Feed,
    Message,
    OutputStatus,
    Submit,
    SubmitMany,
    Wait,
    many,
)
from shoal.spec.call_graph import InputInfo

#: The messages of calls a container's code makes (what :meth:`Intake.take` takes of a
#: container: its ``Credit`` is about the inputs it serves).
CALLS: Final = (Submit, SubmitMany, Wait, CallCancel)

#: A pending batch of submits for one pool: (pool, method, stream).
_BatchKey = tuple[Pool, str, bool]


class DurableSpawns(Protocol):
    """Where durable spawns are stored and waited on (a server's spawns)."""

    def submit_many(
        self,
        messages: list[Submit],
        accepted: Callable[[str, str], None],
        refused: Callable[[str, BaseException], None],
        parent: InputRecord | None = None,
    ) -> None: ...

    def wait(self, object_id: str, answer: Callable[[CallDone], None]) -> Callable[[], None]: ...

    def cancel(self, object_id: str) -> bool: ...

    def graph(self, object_id: str) -> list[InputInfo]: ...

    def app_of(self, object_id: str) -> str | None: ...


class Identity(Protocol):
    """Who a peer is, as far as its calls go: what each name it sends reaches."""

    def pool(self, app: str, function: str, parameters: bytes) -> Pool:
        """The pool that ``function`` of ``app`` (an object of it, for ``parameters``)
        means for this peer.

        Raises:
            Error: no such function for this peer (NotFoundError, ExecutionError).
        """
        ...

    def spawns(self, app: str) -> tuple[DurableSpawns, str]:
        """Where this peer's durable spawn naming ``app`` is stored, and the app it is
        stored under.

        Raises:
            Error: this peer's spawns are not stored, or not in ``app``.
        """
        ...

    def parent(self, input_id: str) -> InputRecord | None:
        """The input the peer's code was running when it called (for the call graph)."""
        ...

    def waits_on(self, object_id: str) -> DurableSpawns:
        """Where stored call ``object_id`` is found, if this peer may wait on it.

        Raises:
            Error: no such call for this peer.
        """
        ...


class Intake:
    """The calls of one peer's connection (see the module docstring).

    Args:
        identity: what the peer may reach.
        send: sends one message to the peer.
        abort: drops the peer (it sent a malformed frame).
        piped: the peer is a client in this process on a pipe: nothing is gained by
            batching per loop turn there (no frames, no system calls), so submits are
            queued in their pools, and outcomes sent, at once; except an outcome known
            while a submit is being taken, which waits for the loop's next turn (the
            client is still inside its call then).
        web: the peer may pass on web requests' bodies and credit (``Feed``,
            ``Credit``): a client, whose gateway serves through the server. A
            container's ``Credit`` is about the inputs it serves, not its calls: its
            pool takes it.
    """

    def __init__(
        self,
        identity: Identity,
        send: Callable[[Message], None],
        abort: Callable[[], None],
        piped: bool = False,
        web: bool = False,
    ) -> None:
        self._identity = identity
        self._web = web
        self._send = send
        self._abort = abort
        self._piped = piped
        self._taking = False
        #: Calls the peer made that have not ended, by call id.
        self._calls: dict[str, tuple[Pool, InputRecord]] = {}
        #: The call id of each of those records.
        self._call_ids: dict[InputRecord, str] = {}
        #: Waits on stored spawns, by call id: how to drop each.
        self._waits: dict[str, Callable[[], None]] = {}
        #: Inputs of this read per pool: (call id, args, parent input id).
        self._batch: dict[_BatchKey, list[tuple[str, bytes, str]]] = {}
        #: Durable inputs of this read, with where each is stored.
        self._durable: list[tuple[DurableSpawns, Submit]] = []
        #: Outcomes to send at the end of this loop turn.
        self._outcomes: list[CallDone] = []
        #: Durable inputs stored in this loop turn: (call id, object id), told in one frame.
        self._stored: list[Accepted] = []

    def take(self, message: Message) -> bool:
        """Take ``message`` if it is a call's; False for any other message."""
        if isinstance(message, Submit | SubmitMany):
            if self._piped:
                self._take_piped(message)
                return True
            if not self._batch and not self._durable:  # the read's first: submit at its end
                after_read(self._submit_batches)
            self._add(message)
        elif isinstance(message, CallCancel):
            self.cancel(message.call_id)
        elif isinstance(message, Wait):
            self._wait(message)
        elif self._web and isinstance(message, Feed | Credit):
            self._pass_on(message)
        else:
            return False
        return True

    # -- submits --------------------------------------------------------------------

    def _take_piped(self, message: Submit | SubmitMany) -> None:
        self._taking = True
        try:
            self._add(message)
            self._submit_batches()
        finally:
            self._taking = False

    def _add(self, message: Submit | SubmitMany) -> None:
        """Add ``message``'s inputs to the batch of their pool (or of durable inputs)."""
        if isinstance(message, Submit):
            call_ids, args, stream = [message.call_id], [message.args], message.stream
        else:
            call_ids, args, stream = message.call_ids, message.args, False
            if len(call_ids) != len(args):
                self._abort()  # a malformed frame: the peer is broken
                return
        parent = message.parent
        if message.durable:
            self._add_durable(message, call_ids, args)
            return
        try:
            pool = self._identity.pool(message.app, message.function, message.parameters)
        except Error as exc:
            for call_id in call_ids:
                self._refused(call_id, exc)
            return
        batch = self._batch.setdefault((pool, message.method, stream), [])
        if isinstance(message, Submit):  # the common case, without a loop
            batch.append((message.call_id, message.args, parent))
        else:
            batch += [(call_id, a, parent) for call_id, a in zip(call_ids, args, strict=True)]

    def _add_durable(
        self, message: Submit | SubmitMany, call_ids: list[str], args: list[bytes]
    ) -> None:
        try:
            spawns, app = self._identity.spawns(message.app)
        except Error as exc:
            for call_id in call_ids:
                self._refused(call_id, exc)
            return
        function, method, parameters = message.function, message.method, message.parameters
        self._durable += [
            (spawns, Submit(c, app, function, method, a, False, True, parameters, message.parent))
            for c, a in zip(call_ids, args, strict=True)
        ]

    def _submit_batches(self) -> None:
        batch, self._batch = self._batch, {}
        durable, self._durable = self._durable, []
        if durable:
            self._store(durable)
        for (pool, method, stream), inputs in batch.items():
            parents = [
                self._identity.parent(parent_id) if parent_id else None
                for _, _, parent_id in inputs
            ]
            try:
                if stream:  # one generator per submit: each needs its own item sender
                    records = [
                        pool.submit_many(
                            [args], self._done, method, self._item_sender(call_id), (), [parent]
                        )[0]
                        for (call_id, args, _), parent in zip(inputs, parents, strict=True)
                    ]
                    for (call_id, _, _), record in zip(inputs, records, strict=True):
                        record.on_credit = self._credit_sender(call_id)
                else:
                    args = [args for _, args, _ in inputs]
                    records = pool.submit_many(args, self._done, method, parents=parents)
            except ExecutionError as exc:
                for call_id, _, _ in inputs:
                    self._refused(call_id, exc)
                continue
            calls, call_ids = self._calls, self._call_ids  # the records: answer or keep each
            for (call_id, _, _), record in zip(inputs, records, strict=True):
                if record.done:
                    self._reply(call_id, record)
                else:
                    calls[call_id] = (pool, record)
                    call_ids[record] = call_id

    def _store(self, durable: list[tuple[DurableSpawns, Submit]]) -> None:
        """Store durable inputs: one ``submit_many`` per parent input (the call graph's)."""
        groups: dict[tuple[DurableSpawns, str], list[Submit]] = {}
        for spawns, submit in durable:
            groups.setdefault((spawns, submit.parent), []).append(submit)
        for (spawns, parent_id), group in groups.items():
            parent = self._identity.parent(parent_id) if parent_id else None
            spawns.submit_many(group, self._accepted, self._refused, parent)

    # -- outcomes -------------------------------------------------------------------

    def _done(self, record: InputRecord) -> None:
        call_id = self._call_ids.pop(record, None)
        if call_id is not None and self._calls.pop(call_id, None) is not None:
            self._reply(call_id, record)

    def _item_sender(self, call_id: str) -> Callable[[bytes], None]:
        def item(data: bytes) -> None:
            self._send(CallItem(call_id, data))

        return item

    def _credit_sender(self, call_id: str) -> Callable[[int], None]:
        """Tell the peer that a web request's app took more of its body (the gateway
        sending it waits for this credit)."""

        def credit(amount: int) -> None:
            self._send(Credit(call_id, amount))

        return credit

    def _reply(self, call_id: str, record: InputRecord) -> None:
        self._send_done(outcome_message(call_id, record))
        record.result = None  # delivered; the record lives on only in its parent's graph

    def _send_done(self, outcome: CallDone) -> None:
        """Send ``outcome`` with the others that end in this loop turn (one batch frame
        for all of them); on a pipe, at once (see ``piped``)."""
        if self._piped and not self._taking:
            self._send(outcome)
            return
        if not self._outcomes:
            after_turn(self._send_outcomes)
        self._outcomes.append(outcome)

    def _send_outcomes(self) -> None:
        outcomes, self._outcomes = self._outcomes, []
        if len(outcomes) == 1:
            self._send(outcomes[0])
        elif outcomes:
            self._send(many(outcomes))

    def _refused(self, call_id: str, error: BaseException) -> None:
        self._send_done(CallDone(call_id, OutputStatus.ERROR, payload.dump_error(error)))

    def _accepted(self, call_id: str, object_id: str) -> None:
        """Tell the peer, with the others stored in this loop turn (one frame; on a
        pipe, at once: a commit's callback, never inside the client's call)."""
        if self._piped:
            self._send(Accepted(call_id, object_id))
            return
        if not self._stored:
            after_turn(self._send_stored)
        self._stored.append(Accepted(call_id, object_id))

    def _send_stored(self) -> None:
        stored, self._stored = self._stored, []
        if len(stored) == 1:
            self._send(stored[0])
        elif stored:
            self._send(many(stored))

    # -- cancels, waits, streamed bodies --------------------------------------------

    def cancel(self, call_id: str) -> None:
        """Cancel the peer's call ``call_id``, or drop its wait."""
        entry = self._calls.pop(call_id, None)
        if entry is not None:
            pool, record = entry
            self._call_ids.pop(record, None)
            pool.cancel(record)
        self._waits.pop(call_id, nothing)()

    def _pass_on(self, message: Feed | Credit) -> None:
        """A chunk of a web request's body, or credit from its reader, for the call it is
        part of (a gateway in the peer's process serving through this server)."""
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
        """Answer with the stored spawn's ``CallDone`` once it has one; a polling wait is
        answered at once, with ``Accepted`` while there is no outcome yet."""
        call_id = message.call_id
        try:
            spawns = self._identity.waits_on(message.object_id)
        except Error as exc:
            self._refused(call_id, exc)
            return
        waits, send = self._waits, self._send

        def answer(done: CallDone) -> None:
            if waits.pop(call_id, None) is not None:
                send(CallDone(call_id, done.status, done.data))

        waits[call_id] = nothing
        drop = spawns.wait(message.object_id, answer)
        if call_id in waits:
            waits[call_id] = drop
            if message.poll:
                waits.pop(call_id)
                drop()
                send(Accepted(call_id, message.object_id))

    def lost(self) -> None:
        """The peer went away: its calls and waits have no one to answer to."""
        self._batch.clear()
        self._durable.clear()
        for call_id in list(self._calls):
            self.cancel(call_id)
        for call_id in list(self._waits):
            self.cancel(call_id)
