"""How a Dict or Queue handle reaches the object store, wherever the code runs.

Every operation is one op (``dict_get``, ``queue_put``, ...; see
:mod:`shoal.server.objects`) with a msgpack body whose keys and values are
pickled here. It goes, in this order of precedence:

1. inside a container, through the container's connection to its control plane;
2. to the server this process uses (:func:`~shoal.client.target.find_target`, asked
   once per process);
3. with no server, to the embedded server in this process (the embedded default,
   :mod:`shoal.server.embedded`): named objects persist in ``SHOAL_HOME``'s SQLite
   file as a server's would. The process then owns the home, one at a time, until
   it exits; containers of an app run here reach the same store through their
   control plane.
"""

from __future__ import annotations

import asyncio
import pickle
from typing import Any, Self

import cloudpickle
import msgpack

from shoal import settings
from shoal.bridge import run_async, run_sync
from shoal.client.connection import connect
from shoal.client.target import Target, embedded_target, find_target
from shoal.context import channel as call_channel
from shoal.context import is_local
from shoal.exception import (
    DeserializationError,
    ExecutionError,
    RequestSizeError,
    SerializationError,
)
from shoal.protocol.messages import Reply, settle

#: Where this process's object ops go: the server it uses (asked once per process).
_route: Target | None = None


async def request(op: str, **body: Any) -> Any:
    """Send object op ``op`` by the route above and return its answer (on the
    background loop).

    Raises:
        NotFoundError, InvalidError, ...: as the store raised them.
    """
    channel = call_channel()
    if channel is not None:
        return await through_channel(op, body)
    if not is_local():  # a fork server importing the module before any container runs
        raise ExecutionError(
            "no container connection yet (the module is being imported ahead of its "
            "containers); each container imports it again, and its calls then go through"
        )
    global _route
    if _route is None:  # chosen once: looking for a server reads files
        _route = find_target() or embedded_target()
    connection = await connect(_route)
    return await connection.request(op, **body)


async def through_channel(op: str, body: dict[str, Any]) -> Any:
    """Send ``op`` over this container's connection to its control plane; its answer."""
    channel = call_channel()
    assert channel is not None
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[Any] = loop.create_future()

    def deliver(reply: Reply) -> None:
        loop.call_soon_threadsafe(settle, answer, reply)

    channel.request(op, msgpack.packb(body, use_bin_type=True), deliver)
    return await answer


def dump(value: Any, what: str = "value") -> bytes:
    """``value`` pickled for the store.

    Raises:
        SerializationError: it cannot be pickled.
        RequestSizeError: its pickle is over ``SHOAL_MAX_PAYLOAD_BYTES``.
    """
    try:
        data: bytes = cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        raise SerializationError(f"cannot pickle {what} {value!r:.80}: {exc!r}") from exc
    limit = settings.max_payload_bytes()
    if len(data) > limit:
        raise RequestSizeError(f"{what} pickles to {len(data)} bytes; the limit is {limit}")
    return data


def load(data: bytes) -> Any:
    """A stored key or value, unpickled.

    Raises:
        DeserializationError: it cannot be unpickled here (a class this process lacks).
    """
    try:
        return pickle.loads(data)
    except Exception as exc:
        raise DeserializationError(f"cannot unpickle a stored value: {exc!r}") from exc


class NamedObject:
    """What Dict, Queue and Volume handles share: a name, opened on first use.

    ``kind`` is ``"dict"``, ``"queue"`` or ``"volume"`` (the ops' prefix). A handle made by
    ``from_name`` asks the store for its object the first time it is used (so a
    module-level ``Dict.from_name(...)`` costs nothing where it is never used);
    handles pickle, so one can be passed to a function as an argument.
    """

    kind = ""

    def __init__(self, name: str, create: bool = False, opened: bool = False) -> None:
        self._name = name
        self._create = create
        self._opened = opened

    @classmethod
    def from_name(
        cls,
        name: str,
        *,
        environment_name: str | None = None,
        create_if_missing: bool = False,
        **_: Any,
    ) -> Self:
        """The object ``name`` of this kind; it is looked up (or created) on first use
        (a volume: also when a function that mounts it starts).

        Raises (then):
            NotFoundError: it does not exist and ``create_if_missing`` is off.
        """
        return cls(name, create=create_if_missing)

    @classmethod
    def delete(cls, name: str, **_: Any) -> None:
        """Delete the object ``name`` of this kind and everything it holds.

        Raises:
            NotFoundError: there is none.
        """
        run_sync(request(f"{cls.kind}_delete", name=name))

    @property
    def name(self) -> str:
        """The object's name (an ephemeral one's id)."""
        return self._name

    @property
    def create_if_missing(self) -> bool:
        """Whether first use creates the object when it does not exist."""
        return self._create

    async def _op(self, op: str, **body: Any) -> Any:
        if not self._opened:
            await request(f"{self.kind}_open", name=self._name, create=self._create)
            self._opened = True
        return await request(f"{self.kind}_{op}", name=self._name, **body)

    def __repr__(self) -> str:
        return f"<shoal.{type(self).__name__} {self._name!r}>"


class Ephemeral:
    """``with X.ephemeral() as x:`` (or ``async with``): an object that exists for the
    block and is deleted after it (or when this process's connection closes)."""

    def __init__(self, cls: type[NamedObject]) -> None:
        self._cls = cls
        self._object: NamedObject | None = None

    async def _open(self) -> NamedObject:
        answer = await request(f"{self._cls.kind}_ephemeral")
        self._object = self._cls(answer["name"], opened=True)
        return self._object

    async def _close(self) -> None:
        if self._object is not None:
            await request(f"{self._cls.kind}_delete", name=self._object.name)

    def __enter__(self) -> Any:
        return run_sync(self._open())

    def __exit__(self, *exc: object) -> None:
        run_sync(self._close())

    async def __aenter__(self) -> Any:
        return await run_async(self._open())

    async def __aexit__(self, *exc: object) -> None:
        await run_async(self._close())
