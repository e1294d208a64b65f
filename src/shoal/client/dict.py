"""``shoal.Dict``: a key-value store shared by every container and caller of a server.

Keys and values are anything picklable (values up to ``SHOAL_MAX_PAYLOAD_BYTES``);
two keys are the same when their pickles are equal. Each method blocks; its
``.aio`` form awaits (``await d.get.aio("k")``). A named Dict persists in the
server's store (see :mod:`shoal.client.objects` for where that is).

Example::

    d = shoal.Dict.from_name("scores", create_if_missing=True)
    d["alice"] = 3
    d.put("bob", 5, skip_if_exists=True)
    assert "alice" in d and d.get("carol", 0) == 0

    with shoal.Dict.ephemeral() as scratch:  # deleted after the block
        scratch.update({"a": 1})
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from shoal.bridge import bridged, bridged_iter
from shoal.client.objects import Ephemeral, NamedObject, dump, load

#: Keys and values per chunk when iterating.
_CHUNK = 1000

_MISSING = object()


class Dict(NamedObject):
    """A named or ephemeral key-value store (see the module docstring)."""

    kind = "dict"

    @staticmethod
    def ephemeral(data: Mapping[Any, Any] | None = None, **_: Any) -> Ephemeral:
        """A Dict for the ``with`` block only (filled with ``data`` first)."""
        return _Filled(data)

    @bridged
    async def get(self, key: Any, default: Any = None) -> Any:
        """The value of ``key``, or ``default``."""
        answer = await self._op("get", key=dump(key, "key"))
        return load(answer["value"]) if answer["found"] else default

    @bridged
    async def contains(self, key: Any) -> bool:
        """Whether ``key`` is in the Dict."""
        return bool(await self._op("contains", key=dump(key, "key")))

    @bridged
    async def len(self) -> int:
        """How many keys the Dict has."""
        return int(await self._op("len"))

    @bridged
    async def put(self, key: Any, value: Any, *, skip_if_exists: bool = False) -> bool:
        """Set ``key`` to ``value``; with ``skip_if_exists``, leave an existing key alone.
        Returns whether the value was stored."""
        stored = await self._op(
            "put", key=dump(key, "key"), value=dump(value), skip_if_exists=skip_if_exists
        )
        return bool(stored)

    @bridged
    async def update(self, other: Mapping[Any, Any] | None = None, /, **kwargs: Any) -> None:
        """Set every key of ``other`` and ``kwargs``, in one change."""
        pairs = {**(dict(other) if other is not None else {}), **kwargs}
        if pairs:
            items = [[dump(k, "key"), dump(v)] for k, v in pairs.items()]
            await self._op("update", items=items)

    @bridged
    async def pop(self, key: Any, default: Any = _MISSING) -> Any:
        """Remove ``key`` and return its value (``default`` when absent).

        Raises:
            KeyError: absent, and no default.
        """
        answer = await self._op("pop", key=dump(key, "key"))
        if answer["found"]:
            return load(answer["value"])
        if default is _MISSING:
            raise KeyError(key)
        return default

    @bridged
    async def clear(self) -> None:
        """Remove every key."""
        await self._op("clear")

    @bridged_iter
    async def keys(self) -> AsyncIterator[list[Any]]:
        """Every key (a snapshot)."""
        for chunk in await self._chunks():
            yield [load(k) for k, _ in chunk]

    @bridged_iter
    async def values(self) -> AsyncIterator[list[Any]]:
        """Every value (a snapshot)."""
        for chunk in await self._chunks():
            yield [load(v) for _, v in chunk]

    @bridged_iter
    async def items(self) -> AsyncIterator[list[tuple[Any, Any]]]:
        """Every (key, value) pair (a snapshot)."""
        for chunk in await self._chunks():
            yield [(load(k), load(v)) for k, v in chunk]

    async def _chunks(self) -> list[list[list[bytes]]]:
        pairs = await self._op("items")
        return [pairs[i : i + _CHUNK] for i in range(0, len(pairs), _CHUNK)]

    def __getitem__(self, key: Any) -> Any:
        value = self.get(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def __setitem__(self, key: Any, value: Any) -> None:
        self.put(key, value)

    def __delitem__(self, key: Any) -> None:
        self.pop(key)

    def __contains__(self, key: Any) -> bool:
        return self.contains(key)


class _Filled(Ephemeral):
    def __init__(self, data: Mapping[Any, Any] | None) -> None:
        super().__init__(Dict)
        self._data = data

    async def _open(self) -> NamedObject:
        created = await super()._open()
        assert isinstance(created, Dict)
        if self._data:
            await created.update.aio(self._data)
        return created
