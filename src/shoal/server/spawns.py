"""Durable spawns: inputs stored before they are acknowledged, outcomes kept for a while.

``f.spawn(...)`` on a deployed function sends a durable ``Submit``. The input
gets an id (``fc-...``), is written to the store in the next group commit, and
is queued in its pool at once; the client hears ``Accepted`` only once the
commit is done, so an acknowledged input is on disk. Its outcome is written the
same way when it ends, and kept for SHOAL_RESULT_TTL seconds; ``Wait`` answers
from memory while the outcome is on its way to disk, from the store after.

After a restart, every stored input without an outcome is queued again in its
app's current version: delivery is at least once. An input that was running
when the server died runs again from the start.
"""

from __future__ import annotations

import asyncio
import collections
import secrets
import time
from collections.abc import Callable

from shoal import settings
from shoal.control.call_graph import graph_of, lone_node
from shoal.control.calls import InputRecord, outcome_message
from shoal.control.pool import Pool
from shoal.control.spawned import KEEP, LiveCall, nothing
from shoal.exception import Error, NotFoundError
from shoal.protocol import payload
from shoal.protocol.messages import CallDone, OutputStatus, Submit
from shoal.server.apps import Apps
from shoal.server.store import Store, StoredCall
from shoal.spec.call_graph import InputInfo

#: How often outcomes past their time are deleted (seconds).
_EXPIRE_EVERY = 60.0

Answer = Callable[[CallDone], None]


class Spawns:
    """The durable inputs of one server (see the module docstring)."""

    def __init__(self, store: Store, apps: Apps) -> None:
        self._store = store
        self._apps = apps
        self._live: dict[str, LiveCall] = {}
        #: The object id of each running record.
        self._object_ids: dict[InputRecord, str] = {}
        self._expiry: asyncio.TimerHandle | None = None
        #: The records of the newest finished calls, for their call graphs.
        self._graphs: collections.OrderedDict[str, InputRecord] = collections.OrderedDict()

    def start(self, restore: bool = True) -> None:
        """Queue again every stored input that has no outcome (unless not to ``restore``),
        and start expiring old ones."""
        for call in self._store.pending_calls() if restore else ():
            assert call.args is not None
            self._run(call.id, call.app, call.function, call.method, call.parameters, call.args)
        self._expire()

    def stop(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()

    def submit_many(
        self,
        messages: list[Submit],
        accepted: Callable[[str, str], None],
        refused: Callable[[str, BaseException], None],
        parent: InputRecord | None = None,
    ) -> None:
        """Store and queue each message's input: one pool submit per function and one
        store write for all; call ``accepted(call_id, object_id)`` once an input is on
        disk, or ``refused(call_id, error)`` at once if it cannot run. ``parent`` is the
        input whose code spawned them, if any (for the call graph)."""
        groups: dict[tuple[str, str, str, bytes], list[Submit]] = {}
        for message in messages:
            key = (message.app, message.function, message.method, message.parameters)
            groups.setdefault(key, []).append(message)
        now = time.time()
        for (app, function, method, parameters), group in groups.items():
            try:  # an unknown app or function is refused before anything is stored
                pool = self._apps.current(app).pool(function, parameters)
            except Error as exc:
                for message in group:
                    refused(message.call_id, exc)
                continue
            ids = ["fc-" + secrets.token_hex(12) for _ in group]
            self._queue(pool, ids, [m.args for m in group], method, parent)
            stored = [
                StoredCall(oid, app, function, method, parameters, m.args, None, None, now, None)
                for oid, m in zip(ids, group, strict=True)
            ]
            pairs = [(m.call_id, oid) for m, oid in zip(group, ids, strict=True)]

            def tell(pairs: list[tuple[str, str]] = pairs) -> None:
                for call_id, object_id in pairs:
                    accepted(call_id, object_id)

            self._store.add_calls(stored, tell)

    def _queue(
        self,
        pool: Pool,
        ids: list[str],
        args: list[bytes],
        method: str,
        parent: InputRecord | None = None,
    ) -> None:
        lives = [LiveCall(pool) for _ in ids]
        for object_id, live in zip(ids, lives, strict=True):
            self._live[object_id] = live
        parents = [parent] * len(ids) if parent is not None else []
        records = pool.submit_many(args, self._finished, method, call_ids=ids, parents=parents)
        for object_id, live, record in zip(ids, lives, records, strict=True):
            live.start(record)
            self._object_ids[record] = object_id
            if record.done:  # refused at once (a pool that cannot start containers)
                self._finished(record)

    def _finished(self, record: InputRecord) -> None:
        object_id = self._object_ids.pop(record, None)
        if object_id is not None:
            self._finish(object_id, outcome_message(object_id, record))
            record.result = None  # the outcome holds it; the record stays for the graph

    def _run(
        self, object_id: str, app: str, function: str, method: str, parameters: bytes, args: bytes
    ) -> None:
        try:
            pool = self._apps.current(app).pool(function, parameters)
        except Error as exc:  # restored, but its app or function is gone
            self._live[object_id] = LiveCall(None)
            self._finish(
                object_id, CallDone(object_id, OutputStatus.ERROR, payload.dump_error(exc))
            )
            return
        self._queue(pool, [object_id], [args], method)

    def _finish(self, object_id: str, outcome: CallDone) -> None:
        live = self._live.get(object_id)
        if live is None or not live.settle(outcome):
            return

        def stored() -> None:  # on disk: answer later waits from the store
            finished = self._live.pop(object_id, None)
            if finished is not None and finished.record is not None:
                self._graphs[object_id] = finished.record  # newest last
                if len(self._graphs) > KEEP:
                    self._graphs.popitem(last=False)

        self._store.finish_call(object_id, outcome.status, outcome.data, stored)

    def wait(self, object_id: str, answer: Answer) -> Callable[[], None]:
        """Call ``answer`` with the outcome of ``object_id`` once it has one; return a
        function that drops the wait."""
        live = self._live.get(object_id)
        if live is not None:
            return live.wait(answer)
        stored = self._store.call(object_id)
        if stored is None:
            error = NotFoundError(
                f"no function call {object_id!r} (never spawned here, or its result was "
                f"kept for {settings.result_ttl():g} s and expired)"
            )
            answer(CallDone(object_id, OutputStatus.ERROR, payload.dump_error(error)))
        elif stored.status is not None:
            answer(CallDone(object_id, stored.status, stored.result or b""))
        else:  # stored but not live: its commit and its restore raced; it is on its way
            self._live.setdefault(object_id, LiveCall(None)).waiters.append(answer)
        return nothing

    def cancel(self, object_id: str) -> bool:
        """Cancel spawn ``object_id`` if it still runs; return whether it was known."""
        live = self._live.get(object_id)
        if live is None:
            return self._store.call(object_id) is not None
        live.cancel()
        return True

    def app_of(self, object_id: str) -> str | None:
        """The app spawn ``object_id`` belongs to (None: no such spawn is kept)."""
        stored = self._store.call(object_id)
        return None if stored is None else stored.app

    def graph(self, object_id: str) -> list[InputInfo]:
        """The call graph ``object_id`` is part of: from its records while they are kept,
        else its own node with the status the store holds.

        Raises:
            NotFoundError: no such call.
        """
        live = self._live.get(object_id)
        if live is not None:
            return live.graph(object_id)
        node = self._graphs.get(object_id)
        if node is not None:
            return graph_of(node)
        stored = self._store.call(object_id)
        if stored is None:
            raise NotFoundError(f"no function call {object_id!r}")
        function = f"{stored.function}.{stored.method}" if stored.method else stored.function
        return lone_node(object_id, function, stored.status)

    def _expire(self) -> None:
        self._store.expire_calls(time.time() - settings.result_ttl())
        self._expiry = asyncio.get_running_loop().call_later(_EXPIRE_EVERY, self._expire)
