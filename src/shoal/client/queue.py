"""``shoal.Queue``: a FIFO shared by every container and caller of a server.

Values are anything picklable. A queue has partitions (``partition="jobs-7"``,
1-64 bytes), each its own FIFO; the default partition is unnamed. ``get`` blocks
until an item comes (or ``timeout`` seconds pass: ``queue.Empty``). Modal's limits
hold: 5,000 items per partition (``put`` waits for room, or raises ``queue.Full``)
and 100,000 partitions; a partition is cleared ``partition_ttl`` seconds (at most,
and by default, 24 hours) after its last put; a server restart starts every stored
partition's clock again. Each method has an ``.aio`` form.

Example::

    q = shoal.Queue.from_name("jobs", create_if_missing=True)
    q.put_many([1, 2, 3])
    assert q.get() == 1 and q.get_many(5, block=False) == [2, 3]
"""

from __future__ import annotations

import queue as stdlib_queue
from collections.abc import AsyncIterator
from typing import Any

from shoal.bridge import bridged, bridged_iter
from shoal.client.objects import Ephemeral, NamedObject, dump, load


class Queue(NamedObject):
    """A named or ephemeral partitioned FIFO (see the module docstring)."""

    kind = "queue"

    @staticmethod
    def ephemeral(**_: Any) -> Ephemeral:
        """A Queue for the ``with`` block only."""
        return Ephemeral(Queue)

    @bridged
    async def put(
        self,
        v: Any,
        block: bool = True,
        timeout: float | None = None,  # noqa: ASYNC109 - Modal's API
        *,
        partition: str | None = None,
        partition_ttl: int = 24 * 3600,
    ) -> None:
        """Add ``v`` at the end of the partition, which is cleared ``partition_ttl``
        seconds (at most 24 hours) after its last put.

        Raises:
            queue.Full: the partition holds 5,000 items (or the queue 100,000
                partitions) and no room came in ``timeout`` seconds (at once without
                ``block``).
        """
        await self._put([dump(v)], block, timeout, partition, partition_ttl)

    @bridged
    async def put_many(
        self,
        vs: list[Any],
        block: bool = True,
        timeout: float | None = None,  # noqa: ASYNC109 - Modal's API
        *,
        partition: str | None = None,
        partition_ttl: int = 24 * 3600,
    ) -> None:
        """Add every value of ``vs``, in order, in one change: all of them or, when there
        is no room for all, none (see :meth:`put`).

        Raises:
            queue.Full: as :meth:`put`; at once for more than 5,000 values.
        """
        if vs:
            await self._put([dump(v) for v in vs], block, timeout, partition, partition_ttl)

    async def _put(
        self,
        values: list[bytes],
        block: bool,
        wait: float | None,
        partition: str | None,
        ttl: int,
    ) -> None:
        answer = await self._op(
            "put",
            values=values,
            block=block,
            timeout=wait if block else None,
            partition=partition or "",
            ttl=ttl,
        )
        if answer.get("full"):
            raise stdlib_queue.Full(
                f"Queue {self.name!r} has no room for {len(values)} more item(s) "
                "(5,000 per partition)"
            )

    @bridged
    async def get(
        self,
        block: bool = True,
        timeout: float | None = None,  # noqa: ASYNC109 - Modal's API
        *,
        partition: str | None = None,
    ) -> Any:
        """Remove and return the oldest item. Without ``block``, None when empty.

        Raises:
            queue.Empty: blocking, and ``timeout`` passed with no item.
        """
        values = await self._get(1, block, timeout, partition)
        return values[0] if values else None

    @bridged
    async def get_many(
        self,
        n_values: int,
        block: bool = True,
        timeout: float | None = None,  # noqa: ASYNC109 - Modal's API
        *,
        partition: str | None = None,
    ) -> list[Any]:
        """Remove and return up to ``n_values`` items, oldest first (blocking: at least one).

        Raises:
            queue.Empty: blocking, and ``timeout`` passed with no item.
        """
        return await self._get(n_values, block, timeout, partition)

    async def _get(
        self, n: int, block: bool, wait: float | None, partition: str | None
    ) -> list[Any]:
        answer = await self._op(
            "get", n=n, block=block, timeout=wait if block else None, partition=partition or ""
        )
        if answer["timed_out"]:
            raise stdlib_queue.Empty()
        return [load(v) for v in answer["values"]]

    @bridged
    async def len(self, *, partition: str | None = None, total: bool = False) -> int:
        """Items in the partition (``total``: in every partition)."""
        return int(await self._op("len", partition=partition or "", total=total))

    @bridged
    async def clear(self, *, partition: str | None = None, all: bool = False) -> None:
        """Remove the partition's items (``all``: every partition's)."""
        await self._op("clear", partition=partition or "", all=all)

    @bridged_iter
    async def iterate(
        self, *, partition: str | None = None, item_poll_timeout: float = 0.0
    ) -> AsyncIterator[list[Any]]:
        """Every item of the partition, oldest first, without removing any; then new ones
        as they come, until none comes for ``item_poll_timeout`` seconds."""
        after = 0
        while True:
            batch = await self._op(
                "peek", after=after, timeout=item_poll_timeout, partition=partition or ""
            )
            if not batch:
                return
            after = batch[-1][0]
            yield [load(v) for _, v in batch]
