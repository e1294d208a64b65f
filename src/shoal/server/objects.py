"""Dicts and Queues: named ones kept in the store, ephemeral ones in memory (and the
door to the home's volumes and named secrets: :mod:`shoal.server.volumes`,
:mod:`shoal.server.secrets`).

Keys and values arrive pickled by the client and stay opaque bytes here: the
server never unpickles them, so two keys are the same key when their pickles are
equal (as in Modal). A named object's contents live in memory once it is first
used and in SQLite (tables ``dicts``, ``dict_items``, ``queues``,
``queue_items``); a change is acknowledged once its group commit is done
(:meth:`~shoal.server.store.Store.write`), so an acknowledged put survives a
server crash. Ephemeral objects (``Dict.ephemeral()``) have ids ``di-...`` /
``qu-...``, are never stored, and vanish when their owner deletes them or
disconnects.

:meth:`Objects.handle` answers the ``dict_*`` and ``queue_*`` ops (bodies are
msgpack maps; see :mod:`shoal.client.objects`), whoever asks: a client session,
a container through its control plane, or the caller's own process in the
embedded default.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

from shoal import log, settings
from shoal.exception import ExecutionError, InvalidError, NotFoundError, RequestSizeError
from shoal.server.fields import data, text
from shoal.server.home_share import Guest, OwnerGone, share
from shoal.server.names import check_name
from shoal.server.secrets import Secrets
from shoal.server.store import Store, lock_home
from shoal.server.volumes import Volumes

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS dicts (name TEXT PRIMARY KEY, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS dict_items (
    dict TEXT NOT NULL, key BLOB NOT NULL, value BLOB NOT NULL, PRIMARY KEY (dict, key)
);
CREATE TABLE IF NOT EXISTS queues (name TEXT PRIMARY KEY, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS queue_items (
    queue TEXT NOT NULL, partition TEXT NOT NULL, seq INTEGER NOT NULL, value BLOB NOT NULL,
    PRIMARY KEY (queue, partition, seq)
);
"""

#: Longest queue partition key (Modal's limit).
MAX_PARTITION: Final = 64
#: Items one queue partition holds; a put past it waits for room (Modal's limit).
MAX_ITEMS: Final = 5_000
#: Partitions one queue holds (Modal's limit).
MAX_PARTITIONS: Final = 100_000
#: Longest life of a partition after its last put (seconds; Modal's default and limit).
MAX_PARTITION_TTL: Final = 24 * 3600


@dataclass
class _Dict:
    items: dict[bytes, bytes] = field(default_factory=dict)
    durable: bool = True


@dataclass
class _Queue:
    #: Each partition's items, oldest first, as (sequence number, value).
    partitions: dict[str, collections.deque[tuple[int, bytes]]] = field(default_factory=dict)
    #: Futures of readers waiting for a partition to get an item.
    waiting: dict[str, set[asyncio.Future[None]]] = field(default_factory=dict)
    #: Futures of writers waiting for a full partition to get room.
    room: dict[str, set[asyncio.Future[None]]] = field(default_factory=dict)
    #: When each partition is cleared unless a put comes first (``time.time()``), and the
    #: same as a heap of (time, key) whose stale entries are skipped.
    expires: dict[str, float] = field(default_factory=dict)
    expiry_heap: list[tuple[float, str]] = field(default_factory=list)
    next_seq: int = 1
    durable: bool = True

    def partition(self, key: str) -> collections.deque[tuple[int, bytes]]:
        return self.partitions.setdefault(key, collections.deque())

    def wake(self, key: str, waiting: dict[str, set[asyncio.Future[None]]] | None = None) -> None:
        """Wake the readers waiting on ``key`` (or those of ``waiting``)."""
        for waiter in (self.waiting if waiting is None else waiting).pop(key, set()):
            if not waiter.done():
                waiter.set_result(None)

    def touch(self, key: str, ttl: float) -> None:
        """A put to ``key``: it lives ``ttl`` seconds from now."""
        when = time.time() + ttl
        self.expires[key] = when
        heapq.heappush(self.expiry_heap, (when, key))

    def expired(self) -> list[str]:
        """Remove and return the partitions whose time has come."""
        now, gone = time.time(), []
        while self.expiry_heap and self.expiry_heap[0][0] <= now:
            when, key = heapq.heappop(self.expiry_heap)
            if self.expires.get(key) == when:
                del self.expires[key]
                self.partitions.pop(key, None)
                self.wake(key, self.room)
                gone.append(key)
        return gone


@dataclass(frozen=True)
class _Kind:
    """A kind of named object: its name for users, its tables, its ephemeral ids' prefix."""

    label: str
    table: str
    items: str
    #: The column of ``items`` that names the object.
    column: str
    prefix: str
    #: Builds its in-memory state (``durable``: a named one, kept in the store).
    make: Callable[[bool], _Dict | _Queue]


_DICT: Final = _Kind("Dict", "dicts", "dict_items", "dict", "di", lambda d: _Dict(durable=d))
_QUEUE: Final = _Kind("Queue", "queues", "queue_items", "queue", "qu", lambda d: _Queue(durable=d))


class Objects:
    """Every Dict and Queue of one server (or embedded process).

    Args:
        store: where named objects persist; None keeps them in memory only.
        volumes: the folder holding the home's volumes (``volume_*`` ops); None: none.
    """

    def __init__(self, store: Store | None, volumes: str | None = None) -> None:
        self._store = store
        self.volumes = None if volumes is None else Volumes(volumes)
        self.secrets = None if store is None else Secrets(store.db)
        if store is not None:
            store.db.executescript(_SCHEMA)
            store.db.commit()
        self._dicts: dict[str, _Dict] = {}
        self._queues: dict[str, _Queue] = {}

    async def handle(self, op: str, body: dict[str, Any]) -> Any:
        """Answer one ``dict_*`` or ``queue_*`` op.

        Raises:
            InvalidError: an unknown op or a malformed body.
            NotFoundError: the object does not exist.
            RequestSizeError: a value over ``SHOAL_MAX_PAYLOAD_BYTES``.
        """
        if op.startswith("volume_") and self.volumes is not None:
            return await self.volumes.handle(op, body)
        if op.startswith("secret_") and self.secrets is not None:
            return self.secrets.handle(op, body)
        handler = _OPS.get(op)
        if handler is None:
            raise InvalidError(f"unknown object op {op!r}")
        return await handler(self, body)

    def secret_values(self, name: str) -> dict[str, str]:
        """The values of named secret ``name`` (for the control plane, never a client).

        Raises:
            NotFoundError: there is none, or this store keeps no secrets.
        """
        if self.secrets is None:
            raise NotFoundError(f"no secret {name!r}: named secrets need a store")
        return self.secrets.get(name)

    def volume_path(self, name: str) -> str:
        """The folder of volume ``name`` (for the control plane).

        Raises:
            NotFoundError: there is none, or this store keeps no volumes.
        """
        if self.volumes is None:
            raise NotFoundError(f"no Volume {name!r}: volumes need a home")
        return self.volumes.path(name)

    def drop(self, name: str) -> None:
        """Forget ephemeral object ``name`` (its owner went away); others are kept."""
        found = self._dicts.get(name)
        if found is not None and not found.durable:
            del self._dicts[name]
        queue = self._queues.get(name)
        if queue is not None and not queue.durable:
            del self._queues[name]
            for key in list(queue.waiting):
                queue.wake(key)

    # -- persistence -------------------------------------------------------------

    async def _commit(self, durable: bool, change: Callable[[sqlite3.Connection], object]) -> None:
        """Apply ``change`` in the store's next group commit and return after it."""
        if not durable or self._store is None:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def apply(db: sqlite3.Connection) -> None:
            change(db)

        def committed() -> None:
            if not done.done():
                done.set_result(None)

        self._store.write(apply, committed)
        await done

    def _row_exists(self, table: str, name: str) -> bool:
        if self._store is None:
            return False
        query = f"SELECT 1 FROM {table} WHERE name = ?"  # table is one of ours, not input
        return self._store.db.execute(query, (name,)).fetchone() is not None

    # -- what Dicts and Queues share: names, lifetimes, listing ----------------------

    def _held(self, kind: _Kind) -> dict[str, Any]:
        return self._dicts if kind is _DICT else self._queues

    async def _open(self, kind: _Kind, body: dict[str, Any]) -> Any:
        """Find named object ``body["name"]``, creating it when ``body["create"]``."""
        name = check_name(body.get("name"), kind.label)
        if name in self._held(kind) or self._row_exists(kind.table, name):
            return {}
        if not body.get("create"):
            raise NotFoundError(f"no {kind.label} {name!r}; create it with create_if_missing=True")
        if self._store is None:
            raise NotFoundError(
                f"{kind.label} {name!r}: named objects need a store (a server's home)"
            )
        self._held(kind)[name] = kind.make(True)
        now = time.time()
        insert = f"INSERT OR IGNORE INTO {kind.table} VALUES (?, ?)"  # our table, not input
        await self._commit(True, lambda db: db.execute(insert, (name, now)))
        return {}

    def _ephemeral(self, kind: _Kind) -> Any:
        name = f"{kind.prefix}-{secrets.token_hex(8)}"
        self._held(kind)[name] = kind.make(False)
        return {"name": name}

    async def _delete(self, kind: _Kind, body: dict[str, Any]) -> _Dict | _Queue | None:
        """Delete object ``body["name"]``: from the store first, then from memory (so an
        operation meanwhile cannot load it back from a row not yet deleted). Returns the
        object it held in memory, if any."""
        name = text(body, "name")
        held = self._held(kind).get(name)
        if held is None and not self._row_exists(kind.table, name):
            raise NotFoundError(f"no {kind.label} {name!r}")

        def delete(db: sqlite3.Connection) -> None:  # our tables, not input
            db.execute(f"DELETE FROM {kind.items} WHERE {kind.column} = ?", (name,))
            db.execute(f"DELETE FROM {kind.table} WHERE name = ?", (name,))

        await self._commit(held is None or held.durable, delete)
        gone: _Dict | _Queue | None = self._held(kind).pop(name, None)
        return gone

    def _list(self, kind: _Kind) -> list[dict[str, Any]]:
        """Every named object of ``kind``: name, creation time, items held (for a queue, in
        all its partitions, and how many partitions hold them)."""
        if self._store is None:
            return []
        parts = "COUNT(DISTINCT i.partition)" if kind is _QUEUE else "0"
        rows = self._store.db.execute(
            f"SELECT o.name, o.created, COUNT(i.value), {parts} FROM {kind.table} o "
            f"LEFT JOIN {kind.items} i ON i.{kind.column} = o.name GROUP BY o.name ORDER BY o.name"
        )
        found = []
        for name, created, count, partitions in rows:
            row = {"name": name, "created": created, "items": count}
            if kind is _QUEUE:
                row["partitions"] = partitions
            found.append(row)
        return found

    # -- dicts ---------------------------------------------------------------------

    def _dict(self, body: dict[str, Any]) -> _Dict:
        name = text(body, "name")
        found = self._dicts.get(name)
        if found is None and self._row_exists("dicts", name):
            assert self._store is not None
            query = "SELECT key, value FROM dict_items WHERE dict = ?"
            rows = self._store.db.execute(query, (name,))
            found = self._dicts[name] = _Dict({bytes(k): bytes(v) for k, v in rows})
        if found is None:
            raise NotFoundError(f"no Dict {name!r}; create it with create_if_missing=True")
        return found

    async def _dict_open(self, body: dict[str, Any]) -> Any:
        return await self._open(_DICT, body)

    async def _dict_ephemeral(self, body: dict[str, Any]) -> Any:
        return self._ephemeral(_DICT)

    async def _dict_delete(self, body: dict[str, Any]) -> Any:
        await self._delete(_DICT, body)
        return {}

    async def _dict_list(self, body: dict[str, Any]) -> Any:
        return self._list(_DICT)

    async def _dict_get(self, body: dict[str, Any]) -> Any:
        value = self._dict(body).items.get(data(body, "key"))
        return {"found": value is not None, "value": value or b""}

    async def _dict_contains(self, body: dict[str, Any]) -> Any:
        return data(body, "key") in self._dict(body).items

    async def _dict_len(self, body: dict[str, Any]) -> Any:
        return len(self._dict(body).items)

    async def _dict_items(self, body: dict[str, Any]) -> Any:
        return [[k, v] for k, v in self._dict(body).items.items()]

    async def _dict_put(self, body: dict[str, Any]) -> Any:
        target = self._dict(body)
        key, value = data(body, "key"), _value(body, "value")
        if body.get("skip_if_exists") and key in target.items:
            return False
        return await self._put_pairs(body, target, [(key, value)])

    async def _dict_update(self, body: dict[str, Any]) -> Any:
        target = self._dict(body)
        pairs = body.get("items")
        if not isinstance(pairs, list) or not all(
            isinstance(p, list) and len(p) == 2 and all(isinstance(x, bytes) for x in p)
            for p in pairs
        ):
            raise InvalidError("dict_update: items must be [key, value] pairs of bytes")
        for _, value in pairs:
            _check_size(value)
        return await self._put_pairs(body, target, [(k, v) for k, v in pairs])

    async def _put_pairs(
        self, body: dict[str, Any], target: _Dict, pairs: list[tuple[bytes, bytes]]
    ) -> bool:
        name = text(body, "name")
        target.items.update(pairs)
        rows = [(name, k, v) for k, v in pairs]
        await self._commit(
            target.durable,
            lambda db: db.executemany("INSERT OR REPLACE INTO dict_items VALUES (?, ?, ?)", rows),
        )
        return True

    async def _dict_pop(self, body: dict[str, Any]) -> Any:
        target, key, name = self._dict(body), data(body, "key"), text(body, "name")
        value = target.items.pop(key, None)
        if value is None:
            return {"found": False, "value": b""}
        await self._commit(
            target.durable,
            lambda db: db.execute("DELETE FROM dict_items WHERE dict = ? AND key = ?", (name, key)),
        )
        return {"found": True, "value": value}

    async def _dict_clear(self, body: dict[str, Any]) -> Any:
        target, name = self._dict(body), text(body, "name")
        target.items.clear()
        await self._commit(
            target.durable, lambda db: db.execute("DELETE FROM dict_items WHERE dict = ?", (name,))
        )
        return {}

    # -- queues --------------------------------------------------------------------

    def _queue(self, body: dict[str, Any]) -> _Queue:
        name = text(body, "name")
        found = self._queues.get(name)
        if found is None and self._row_exists("queues", name):
            assert self._store is not None
            found = self._queues[name] = _Queue()
            query = "SELECT partition, seq, value FROM queue_items WHERE queue = ? ORDER BY seq"
            rows = self._store.db.execute(query, (name,))
            for partition, seq, value in rows:
                found.partition(partition).append((seq, bytes(value)))
                found.next_seq = max(found.next_seq, seq + 1)
            for partition in found.partitions:  # a partition's clock is not stored: it restarts
                found.touch(partition, MAX_PARTITION_TTL)
        if found is None:
            raise NotFoundError(f"no Queue {name!r}; create it with create_if_missing=True")
        return found

    async def _live_queue(self, body: dict[str, Any]) -> _Queue:
        """The queue ``body`` names, its partitions past their time cleared first."""
        target = self._queue(body)
        gone = target.expired()
        if gone:
            name = text(body, "name")
            rows = [(name, key) for key in gone]
            await self._commit(
                target.durable,
                lambda db: db.executemany(
                    "DELETE FROM queue_items WHERE queue = ? AND partition = ?", rows
                ),
            )
        return target

    async def _queue_open(self, body: dict[str, Any]) -> Any:
        return await self._open(_QUEUE, body)

    async def _queue_ephemeral(self, body: dict[str, Any]) -> Any:
        return self._ephemeral(_QUEUE)

    async def _queue_delete(self, body: dict[str, Any]) -> Any:
        gone = await self._delete(_QUEUE, body)
        if isinstance(gone, _Queue):
            for key in list(gone.waiting):
                gone.wake(key)  # blocked readers see the queue gone
            for key in list(gone.room):
                gone.wake(key, gone.room)  # and blocked writers
        return {}

    async def _queue_list(self, body: dict[str, Any]) -> Any:
        return self._list(_QUEUE)

    async def _queue_put(self, body: dict[str, Any]) -> Any:
        """Add ``values`` to the partition, all or none; with ``block``, wait up to
        ``timeout`` for room; answers ``full`` when there is none."""
        name, key = text(body, "name"), _partition(body)
        values = body.get("values")
        if not isinstance(values, list) or not all(isinstance(v, bytes) for v in values):
            raise InvalidError("queue_put: values must be a list of bytes")
        for value in values:
            _check_size(value)
        ttl = body.get("ttl", MAX_PARTITION_TTL)
        if not isinstance(ttl, int | float) or not 0 < ttl <= MAX_PARTITION_TTL:
            raise InvalidError(f"partition_ttl: 1 to {MAX_PARTITION_TTL} seconds, not {ttl!r}")
        timeout = body.get("timeout")
        deadline = None if timeout is None else time.monotonic() + float(timeout)
        while True:
            target = await self._live_queue(body)
            if _has_room(target, key, len(values)):
                break
            left = None if deadline is None else deadline - time.monotonic()
            if not body.get("block") or len(values) > MAX_ITEMS or (left is not None and left <= 0):
                return {"full": True}
            await _wait(target.room, key, left)
        rows = []
        items = target.partition(key)
        for value in values:
            rows.append((name, key, target.next_seq, value))
            items.append((target.next_seq, value))
            target.next_seq += 1
        target.touch(key, float(ttl))
        target.wake(key)
        await self._commit(
            target.durable,
            lambda db: db.executemany("INSERT INTO queue_items VALUES (?, ?, ?, ?)", rows),
        )
        return {"full": False}

    async def _queue_get(self, body: dict[str, Any]) -> Any:
        """Up to ``n`` values; with ``block``, wait up to ``timeout`` for the first."""
        name, key = text(body, "name"), _partition(body)
        n = max(1, int(body.get("n", 1)))
        timeout = body.get("timeout")
        deadline = None if timeout is None else time.monotonic() + float(timeout)
        while True:
            target = await self._live_queue(body)
            items = target.partition(key)
            if items or not body.get("block"):
                break
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return {"values": [], "timed_out": True}
            await _wait(target.waiting, key, left)
        taken = [items.popleft() for _ in range(min(n, len(items)))]
        if not items:
            target.partitions.pop(key, None)  # an empty partition holds nothing, not even a slot
        if taken:
            target.wake(key, target.room)
            seqs = [(name, key, seq) for seq, _ in taken]
            await self._commit(
                target.durable,
                lambda db: db.executemany(
                    "DELETE FROM queue_items WHERE queue = ? AND partition = ? AND seq = ?", seqs
                ),
            )
        return {"values": [value for _, value in taken], "timed_out": False}

    async def _queue_peek(self, body: dict[str, Any]) -> Any:
        """Items after sequence number ``after`` (for ``iterate``), waiting up to
        ``timeout`` for one when there are none."""
        key, after = _partition(body), int(body.get("after", 0))
        deadline = time.monotonic() + float(body.get("timeout") or 0)
        while True:
            target = await self._live_queue(body)
            newer = [[seq, v] for seq, v in target.partitions.get(key, ()) if seq > after]
            left = deadline - time.monotonic()
            if newer or left <= 0:
                return newer[:1000]
            await _wait(target.waiting, key, left)

    async def _queue_len(self, body: dict[str, Any]) -> Any:
        target = await self._live_queue(body)
        if body.get("total"):
            return sum(len(items) for items in target.partitions.values())
        return len(target.partitions.get(_partition(body), ()))

    async def _queue_clear(self, body: dict[str, Any]) -> Any:
        target, name = await self._live_queue(body), text(body, "name")
        if body.get("all"):
            for key in list(target.partitions):
                target.wake(key, target.room)
            target.partitions.clear()
            change: Callable[[sqlite3.Connection], Any] = lambda db: db.execute(  # noqa: E731
                "DELETE FROM queue_items WHERE queue = ?", (name,)
            )
        else:
            key = _partition(body)
            target.partitions.pop(key, None)
            target.wake(key, target.room)
            change = lambda db: db.execute(  # noqa: E731
                "DELETE FROM queue_items WHERE queue = ? AND partition = ?", (name, key)
            )
        await self._commit(target.durable, change)
        return {}


async def _wait(
    waiting: dict[str, set[asyncio.Future[None]]], key: str, seconds: float | None
) -> None:
    """Return once partition ``key`` may have changed (``waiting`` is its queue's readers
    or writers), or after ``seconds``."""
    waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    waiting.setdefault(key, set()).add(waiter)
    try:
        await asyncio.wait_for(waiter, seconds)
    except TimeoutError:
        pass
    finally:
        waiting.get(key, set()).discard(waiter)


def _has_room(target: _Queue, key: str, count: int) -> bool:
    """Whether ``count`` more items fit in partition ``key``."""
    items = target.partitions.get(key)
    if items is None:
        return count <= MAX_ITEMS and len(target.partitions) < MAX_PARTITIONS
    return len(items) + count <= MAX_ITEMS


def _value(body: dict[str, Any], key: str) -> bytes:
    return _check_size(data(body, key))


def _check_size(value: bytes) -> bytes:
    limit = settings.max_payload_bytes()
    if len(value) > limit:
        raise RequestSizeError(f"a value of {len(value)} bytes exceeds {limit} bytes")
    return value


def _partition(body: dict[str, Any]) -> str:
    key = body.get("partition") or ""
    if not isinstance(key, str) or len(key.encode()) > MAX_PARTITION:
        raise InvalidError(f"partition {key!r}: a string of 1 to {MAX_PARTITION} bytes")
    return key


#: Op name -> handler.
_OPS: Final[dict[str, Callable[[Objects, dict[str, Any]], Awaitable[Any]]]] = {
    name.removeprefix("_"): method
    for name, method in vars(Objects).items()
    if name.startswith(("_dict_", "_queue_")) and callable(method)
}


class HomeObjects:
    """The named objects of a home for the embedded default (:mod:`shoal.server.embedded`).

    The home's store is opened on first use, and this process then owns the home,
    one process at a time, until it exits, sharing its objects with the user's other
    processes (:mod:`shoal.server.home_share`); in a process that finds the home
    owned, they are the owner's, reached through it. A run that uses no named
    object, secret or volume touches the home not at all. The opened store outlives
    the embedded server (which starts and stops with the apps that run on it).
    """

    def __init__(self, home: str) -> None:
        self._home = home

    def _objects(self) -> Objects | Guest:
        """The home's objects, opened on first use (on the loop the embedded server runs
        on): this process's own, or, when another owns the home, a guest of its."""
        with _homes_lock:
            opened = _homes.get(self._home)
            if opened is not None:
                return opened
            guest = _guests.get(self._home)
            if guest is not None and not guest.lost:
                return guest
            os.makedirs(self._home, mode=0o700, exist_ok=True)
            try:
                lock_home(self._home)  # held until this process exits
            except ExecutionError:  # another process owns it: use its objects
                guest = _guests[self._home] = Guest(self._home)
                return guest
            _guests.pop(self._home, None)
            loop = asyncio.get_running_loop()
            store = Store(os.path.join(self._home, "shoal.db"))
            store.start(loop)
            opened = _homes[self._home] = Objects(store, os.path.join(self._home, "volumes"))
            _shares[self._home] = loop.create_task(share(self._home, opened))
            _shares[self._home].add_done_callback(_shared)
            return opened

    async def handle(self, op: str, body: dict[str, Any]) -> Any:
        for _ in range(2):
            try:
                return await self._objects().handle(op, body)
            except OwnerGone:  # not sent: take the home over, or find who did
                continue
        raise ExecutionError(
            f"the owner of {self._home} went away twice while this process looked for it"
        )

    def secret_values(self, name: str) -> dict[str, str]:
        return self._objects().secret_values(name)

    def volume_path(self, name: str) -> str:
        return self._objects().volume_path(name)

    def drop(self, name: str) -> None:
        found = _homes.get(self._home) or _guests.get(self._home)
        if found is not None:
            found.drop(name)


def _shared(task: asyncio.Task[asyncio.Server]) -> None:
    """Say when a home could not be shared: its other processes will be refused."""
    if not task.cancelled() and task.exception() is not None:
        log.say(
            f"shoal: cannot share the home's objects: {task.exception()}",
            component="objects",
            level="error",
        )


#: The homes this process owns, opened by :class:`HomeObjects`.
_homes: dict[str, Objects] = {}
#: Each home's listener for the user's other processes (kept: it lives with the process).
_shares: dict[str, asyncio.Task[asyncio.Server]] = {}
#: The homes another process owns, reached through it.
_guests: dict[str, Guest] = {}
_homes_lock = threading.Lock()
