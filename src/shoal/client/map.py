"""Streaming maps: many inputs in, outputs out as they finish, in bounded memory.

A map never holds its whole input: a feeder pulls items from the caller's
iterable a chunk at a time (on a worker thread, where they are also pickled, so
a slow generator or a big pickle never stalls the control plane) and keeps at
most :func:`window` inputs submitted and not yet handed back. Outputs come back
as chunks, one loop round trip per chunk, in input order or as they finish.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final

from shoal.client.record import CallRecord
from shoal.client.server_pool import ServerPool
from shoal.exception import InvalidError
from shoal.protocol import payload
from shoal.spec.function import Scaling

#: Fewest inputs a map keeps submitted and not yet returned to the caller.
WINDOW: Final = 10_000
#: Containers assumed for a pool without max_containers, to size its window.
_UNBOUNDED_CONTAINERS: Final = 100


def window(scaling: Scaling) -> int:
    """How many inputs a map keeps in flight: enough to fill the pool twice over.

    A smaller window would leave capacity idle (5,000 inputs on 5 containers of
    1,000 slots must all be in flight at once); the floor keeps small pools busy
    while outputs travel back.
    """
    containers = scaling.max_containers or _UNBOUNDED_CONTAINERS
    return max(WINDOW, 2 * scaling.max_inputs * containers)


#: Most items pulled and pickled in one chunk.
CHUNK: Final = 512
#: A chunk is handed over once it has waited this long for more items (seconds).
CHUNK_WAIT: Final = 0.005


@dataclass
class MapProgress:
    """How far one running map has come, for the ``shoal run`` display."""

    label: str
    total: int | None
    done: int = 0


@dataclass(frozen=True, slots=True)
class MapOptions:
    """The caller's choices for one map."""

    order_outputs: bool = True
    return_exceptions: bool = False


def arg_tuples(
    iterables: tuple[Iterable[Any] | AsyncIterable[Any], ...], star: bool
) -> Iterable[tuple[Any, ...]] | AsyncIterable[Any]:
    """The argument tuples of ``map(*iterables)`` or ``starmap(iterable)``.

    A single async iterable (``f.map.aio(agen())``) passes through as it is.
    """
    if len(iterables) == 1 and isinstance(iterables[0], AsyncIterable):
        if star:
            raise InvalidError("starmap takes a plain iterable of argument tuples")
        return iterables[0]
    if any(isinstance(it, AsyncIterable) for it in iterables):
        raise InvalidError("map takes one async iterable, or any number of plain ones")
    plain: tuple[Iterable[Any], ...] = iterables  # type: ignore[assignment]
    if star:
        if len(iterables) != 1:
            raise InvalidError("starmap takes exactly one iterable of argument tuples")
        return (tuple(args) for args in plain[0])
    if not plain:
        raise InvalidError("map needs at least one iterable")
    return zip(*plain, strict=False)


def known_length(iterables: tuple[Iterable[Any] | AsyncIterable[Any], ...]) -> int | None:
    """How many inputs the map will have, when every iterable knows its length."""
    try:
        return min(len(it) for it in iterables)  # type: ignore[arg-type]
    except TypeError:
        return None


def _take(items: Iterator[tuple[Any, ...]], kwargs: dict[str, Any], what: str) -> list[bytes]:
    """Pull and pickle up to CHUNK items, returning early when the source is slow."""
    chunk: list[bytes] = []
    deadline = time.monotonic() + CHUNK_WAIT
    for args in itertools.islice(items, CHUNK):
        chunk.append(payload.dumps((args, kwargs), what))
        if time.monotonic() > deadline:
            break
    return chunk


async def _pickled_chunks(
    items: Iterable[tuple[Any, ...]] | AsyncIterable[Any], kwargs: dict[str, Any], what: str
) -> AsyncIterator[list[bytes]]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield [payload.dumps(((item,), kwargs), what)]
        return
    iterator = iter(items)
    while chunk := await asyncio.to_thread(_take, iterator, kwargs, what):
        yield chunk


class _MapRun:
    """The state of one map: what is in flight, what finished, what is held for order."""

    def __init__(
        self,
        pool: ServerPool,
        method: str,
        options: MapOptions,
        outcome: Callable[[CallRecord], Any],
    ) -> None:
        self.pool = pool
        self.method = method
        self.options = options
        self.outcome = outcome
        self.finished: deque[CallRecord] = deque()
        self.wake = asyncio.Event()
        self.room = asyncio.Event()
        self.position: dict[str, int] = {}  # input id -> its place in the input order
        self.in_flight: dict[str, CallRecord] = {}
        self.held: dict[int, Any] = {}  # finished outputs waiting for earlier ones
        self.next_out = 0

    def on_done(self, record: CallRecord) -> None:
        self.finished.append(record)
        self.wake.set()

    async def feed(self, chunks: AsyncIterator[list[bytes]]) -> None:
        """Submit every chunk, keeping at most :func:`window` inputs not yet handed back."""
        submitted = 0
        limit = window(self.pool.spec.scaling)
        try:
            async for chunk in chunks:
                while len(self.in_flight) + len(self.held) >= limit:
                    self.room.clear()
                    await self.room.wait()
                for record in self.pool.submit_many(chunk, self.on_done, self.method):
                    self.position[record.input_id] = submitted
                    self.in_flight[record.input_id] = record
                    submitted += 1
        finally:
            self.wake.set()

    def collect(self) -> list[Any]:
        """Outcomes ready to hand back now, in the order the options ask for."""
        ready: list[Any] = []
        while self.finished:
            record = self.finished.popleft()
            del self.in_flight[record.input_id]
            place = self.position.pop(record.input_id)
            value = _settle(record, self.outcome, self.options.return_exceptions, place)
            if self.options.order_outputs:
                self.held[place] = value
            else:
                ready.append(value)
        while self.next_out in self.held:
            ready.append(self.held.pop(self.next_out))
            self.next_out += 1
        self.room.set()
        return ready

    def cancel_rest(self) -> None:
        for record in self.in_flight.values():
            self.pool.cancel(record)


async def map_outputs(
    pool: ServerPool,
    method: str,
    items: Iterable[tuple[Any, ...]] | AsyncIterable[Any],
    kwargs: dict[str, Any],
    options: MapOptions,
    outcome: Callable[[CallRecord], Any],
    progress: MapProgress,
) -> AsyncIterator[list[Any]]:
    """Run one input per item on ``pool``; yield chunks of outcomes.

    ``outcome`` turns a finished record into its value (raising its error). With
    ``return_exceptions`` errors are yielded as values instead. When the caller
    stops iterating (or an error is raised), inputs still in flight are cancelled.
    """
    run = _MapRun(pool, method, options, outcome)
    chunks = _pickled_chunks(items, kwargs, f"arguments of {pool.spec.name}")
    feeder = asyncio.create_task(run.feed(chunks))
    try:
        while not (feeder.done() and not run.in_flight and not run.finished):
            await run.wake.wait()
            run.wake.clear()
            if feeder.done() and (error := feeder.exception()) is not None:
                raise error
            ready = run.collect()
            if ready:
                progress.done += len(ready)
                yield ready
    finally:
        feeder.cancel()
        run.cancel_rest()


def _settle(
    record: CallRecord, outcome: Callable[[CallRecord], Any], keep: bool, place: int
) -> Any:
    """The value of a finished input of a map, or its error, raised (or with
    ``return_exceptions``, returned) with a note naming the input by its place."""
    try:
        return outcome(record)
    except BaseException as exc:
        if isinstance(exc, Exception):
            name = f"{record.function}.{record.method}" if record.method else record.function
            exc.add_note(f"(in {name}.map: input {place} of the map, counting from 0)")
        if keep:  # return_exceptions: the error is the value
            return exc
        raise
