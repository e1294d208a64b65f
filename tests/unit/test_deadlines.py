"""The one deadline heap both the control plane and containers watch timeouts with."""

from __future__ import annotations

import asyncio

from shoal.deadlines import DeadlineHeap


def test_only_keys_still_due_expire_in_deadline_order() -> None:
    async def main() -> list[str]:
        expired: list[str] = []
        done = {"b"}  # "b" finished in time: its entry is skipped
        heap: DeadlineHeap[str] = DeadlineHeap(expired.append, lambda key: key not in done)
        now = asyncio.get_running_loop().time()
        heap.watch("c", now + 0.06, 3)
        heap.watch("a", now + 0.02, 3)
        heap.watch("b", now + 0.04, 3)
        await asyncio.sleep(0.15)
        return expired

    assert asyncio.run(main()) == ["a", "c"]


def test_stale_entries_are_pruned_so_the_heap_stays_bounded() -> None:
    async def main() -> int:
        live: set[int] = set()
        heap: DeadlineHeap[int] = DeadlineHeap(lambda _: None, live.__contains__)
        far = asyncio.get_running_loop().time() + 60
        for key in range(10_000):  # each finishes before the next is watched
            live.add(key)
            heap.watch(key, far, len(live))
            live.discard(key)
        size = len(heap)
        heap.close()
        return size

    assert asyncio.run(main()) <= 2 * 1 + 64 + 1
