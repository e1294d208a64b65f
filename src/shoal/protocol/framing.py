"""Length-prefixed frames over an asyncio transport, with write coalescing.

A frame is a 4-byte big-endian length followed by that many bytes of msgpack
(:mod:`shoal.protocol.messages`). :class:`FramedProtocol` parses every complete
frame out of each chunk the socket delivers and hands messages to a callback,
without a task or an ``await`` per frame. Writes are coalesced: frames sent
during one turn of the event loop leave in a single ``transport.write`` at the end
of the turn, which is what keeps a map of many small inputs cheap.

Work that should see every message of a read before it runs (queueing the batch of
inputs a client's read carried) asks for :func:`after_read`: it runs when the read
ends, with no turn of the loop between a message arriving and its consequences
leaving. Work that should see every read of the turn (refilling the slots that
several containers' outputs freed, one reply frame for all the calls that ended)
asks for :func:`after_turn`: one loop callback for all of it, and the writes it
causes leave in the same pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Callable
from typing import Final

from shoal.protocol import payload
from shoal.protocol.messages import Message, ProtocolError, decode, encode

#: The length prefix: unsigned 32-bit big-endian.
_HEADER: Final = struct.Struct(">I")
#: Bytes a frame may hold beyond the payload it carries (ids, field tags).
FRAME_OVERHEAD: Final = 64 * 1024
#: Most messages, and most bytes of payload, one batched message (a Many of
#: Input or Output) carries: with their ids they stay inside a frame limit of the payload
#: limit plus FRAME_OVERHEAD, and a batch this size pays a fraction of a frame's cost.
BATCH_ITEMS: Final = 256
BATCH_BYTES: Final = 256 * 1024


class _Reads(threading.local):
    """Per thread (each loop's): how deep in reads it is, what waits for the end of the
    read, and what waits for the end of the loop turn."""

    def __init__(self) -> None:
        self.depth = 0
        self.after: list[Callable[[], object]] = []
        self.turn: list[Callable[[], object]] = []


_reads: Final = _Reads()


def after_read(callback: Callable[[], object]) -> None:
    """Call ``callback`` once the read being handled on this thread has delivered all its
    messages; outside a read, as :func:`after_turn`."""
    reads = _reads
    if reads.depth:
        reads.after.append(callback)
    else:
        after_turn(callback)


def after_turn(callback: Callable[[], object]) -> None:
    """Call ``callback`` at the end of this loop turn, with everything else asked for in
    it: one loop callback for all of them, not one each, and what they ask for in turn
    (a write of what they sent) runs in the same pass, not a turn later."""
    turn = _reads.turn
    if not turn:
        asyncio.get_running_loop().call_soon(_end_of_turn)
    turn.append(callback)


def _run_all(pending: list[Callable[[], object]], why: str) -> None:
    """Call each of ``pending`` in order, those appended meanwhile too, then empty it. A
    callback that raises is reported to the loop's exception handler, as a ``call_soon``
    callback's would be, and the rest still run."""
    try:
        index = 0
        while index < len(pending):
            callback = pending[index]
            index += 1
            try:
                callback()
            except Exception as exc:
                asyncio.get_running_loop().call_exception_handler(
                    {"message": f"exception in {callback!r} {why}", "exception": exc}
                )
    finally:
        pending.clear()


def _end_of_read(reads: _Reads) -> None:
    """Run what waited for the outermost read to end (its depth is back to zero)."""
    reads.depth = 1  # what the callbacks ask for joins this list
    try:
        _run_all(reads.after, "after a read")
    finally:
        reads.depth = 0


def _end_of_turn() -> None:
    """Run what waited for the end of the turn (a list that grows while it runs)."""
    _run_all(_reads.turn, "at the end of a loop turn")


def frame(message: Message) -> bytes:
    """Return ``message`` as one frame: length prefix plus body."""
    body = encode(message)
    return _HEADER.pack(len(body)) + body


def spans(sizes: list[int], limit: int, most: int) -> list[tuple[int, int]]:
    """Split items of ``sizes`` bytes, in order, into runs of at most ``most`` items and
    ``limit`` bytes (an item larger than ``limit`` runs alone), as (start, end) pairs:
    how several messages go as few batched frames as a frame limit allows."""
    runs: list[tuple[int, int]] = []
    start = total = 0
    for end, size in enumerate(sizes):
        if end > start and (total + size > limit or end - start >= most):
            runs.append((start, end))
            start, total = end, 0
        total += size
    if sizes:
        runs.append((start, len(sizes)))
    return runs


def batches(sizes: list[int]) -> list[tuple[int, int]]:
    """:func:`spans` of messages carrying payloads of ``sizes`` bytes that one batched
    message (a Many of Input or Output) each may carry inside this process's frame limit."""
    if len(sizes) == 1:  # the common case of a single call: nothing to split
        return [(0, 1)]
    return spans(sizes, min(BATCH_BYTES, payload.limit()), BATCH_ITEMS)


class FrameParser:
    """Splits a byte stream into messages; keeps a partial frame between calls.

    Args:
        max_frame: frames longer than this are refused (a peer that claims 4 GB
            is broken or hostile); may be raised once the peer authenticated.
    """

    def __init__(self, max_frame: int) -> None:
        self.max_frame = max_frame
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Message]:
        """Add ``data``; return every message now complete, in order.

        Raises:
            ProtocolError: a frame is too long or not a valid message.
        """
        buffer = self._buffer
        buffer += data
        messages: list[Message] = []
        offset = 0
        size = len(buffer)
        while size - offset >= 4:
            (length,) = _HEADER.unpack_from(buffer, offset)
            if length > self.max_frame:
                raise ProtocolError(f"frame of {length} bytes exceeds {self.max_frame}")
            end = offset + 4 + length
            if end > size:
                break
            messages.append(decode(bytes(buffer[offset + 4 : end])))
            offset = end
        del buffer[:offset]
        return messages


class FramedProtocol(asyncio.Protocol):
    """Reads frames into messages and writes coalesced frames.

    Args:
        on_message: called with each message, in order, on the event loop.
        on_lost: called once when the connection closes, with the error if any.
        max_frame: frames longer than this close the connection (see FrameParser).
    """

    def __init__(
        self,
        on_message: Callable[[Message], None],
        on_lost: Callable[[BaseException | None], None],
        max_frame: int,
    ) -> None:
        self._on_message = on_message
        self._on_lost = on_lost
        self.parser = FrameParser(max_frame)
        self._pending: list[bytes] = []
        self._flush_scheduled = False
        self.transport: asyncio.Transport | None = None
        self._closed = False
        self._closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self._closed or self._closing:
            # Closed before its transport came (a listener's accept still in flight when
            # the server stopped): end the transport now, or it would outlive its loop.
            transport.abort()

    def data_received(self, data: bytes) -> None:
        try:
            messages = self.parser.feed(data)
        except ProtocolError as exc:
            self._fail(exc)
            return
        reads = _reads
        reads.depth += 1
        try:
            for message in messages:
                if self._closed:
                    break
                self._on_message(message)
        finally:
            reads.depth -= 1
            if not reads.depth and reads.after:
                _end_of_read(reads)

    def _fail(self, exc: BaseException | None) -> None:
        self._closed = True
        if self.transport is not None:
            self.transport.abort()
        self._on_lost(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._closed:
            self._closed = True
            self._on_lost(exc)

    def send(self, message: Message) -> None:
        """Queue ``message``; it leaves with the others at the end of this loop turn."""
        if self._closed:
            return
        self._pending.append(frame(message))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            after_turn(self._flush)

    def send_now(self, message: Message) -> None:
        """Send ``message``, after whatever is queued, in one write now: for a sender that
        knows its batch is complete, so no write waits for the end of the turn."""
        if self._closed:
            return
        self._pending.append(frame(message))
        self.flush()

    def flush(self) -> None:
        """Write every queued frame now, in one write (the end of the loop turn would)."""
        transport = self.transport
        if self._closed or transport is None or transport.is_closing() or not self._pending:
            self._pending.clear()  # a peer that died: its connection_lost is on its way
            return
        data = b"".join(self._pending)
        self._pending.clear()
        transport.write(data)

    def _flush(self) -> None:
        self._flush_scheduled = False
        self.flush()

    def close(self) -> None:
        """Flush what is queued, then close the connection."""
        self._closing = True
        self._flush()
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Drop the connection at once: nothing more is read or written; ``on_lost`` runs."""
        if not self._closed:
            self._pending.clear()
            self._fail(None)


class SocketWriter:
    """Writes frames to a non-blocking socket from the loop thread or any other.

    From the loop thread, frames are coalesced and leave in one ``send`` at the end
    of the loop turn. From another thread (a worker that just finished an input),
    a frame is sent at once when nothing is queued ahead of it, saving the hop
    through the loop; otherwise it joins the queue and the loop flushes it with the
    others in one ``send``. A send that would block leaves the rest to the loop,
    which writes it when the socket drains.
    """

    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        self._sock = sock
        self._loop = loop
        self._lock = threading.Lock()
        self._pending = bytearray()
        self._flush_scheduled = False
        self._waiting_writable = False
        self.closed = False

    def send(self, message: Message) -> None:
        """Queue or send ``message``; safe from any thread."""
        data = frame(message)
        on_loop = _running_loop() is self._loop
        with self._lock:
            if self.closed:
                return
            if not (self._pending or on_loop or self._waiting_writable):
                data = data[self._send_some(data) :]
                if not data:
                    return
            self._pending += data
            if self._flush_scheduled or self._waiting_writable:
                return
            self._flush_scheduled = True
        if on_loop:
            self._loop.call_soon(self._flush)
        else:
            self._loop.call_soon_threadsafe(self._flush)

    def _send_some(self, data: bytes | bytearray) -> int:
        try:
            return self._sock.send(data)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError:
            self.closed = True  # the peer is gone; the reader side reports it
            return len(data)

    def _flush(self) -> None:
        with self._lock:
            self._flush_scheduled = False
            if self.closed or not self._pending:
                return
            sent = self._send_some(self._pending)
            del self._pending[:sent]
            if self._pending and not self._waiting_writable:
                self._waiting_writable = True
                self._loop.add_writer(self._sock.fileno(), self._on_writable)

    def _on_writable(self) -> None:
        with self._lock:
            self._waiting_writable = False
            self._loop.remove_writer(self._sock.fileno())
        self._flush()

    def close(self) -> None:
        """Write what is queued (best effort, without blocking) and stop writing."""
        self._flush()
        with self._lock:
            self.closed = True
            if self._waiting_writable:
                self._loop.remove_writer(self._sock.fileno())
                self._waiting_writable = False


class TransportWriter:
    """Writes frames to an asyncio transport (a TLS connection, whose records only the
    loop may write) from the loop thread or any other: the loop's frames are written at
    once (the transport buffers what the socket does not take), another thread's hop
    onto the loop first."""

    def __init__(self, transport: asyncio.WriteTransport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop

    @property
    def closed(self) -> bool:
        """Whether the connection is closed or closing (nothing more is written)."""
        return self._transport.is_closing()

    def send(self, message: Message) -> None:
        """Write ``message``; safe from any thread."""
        data = frame(message)
        if _running_loop() is self._loop:
            self._write(data)
        else:
            with contextlib.suppress(RuntimeError):  # the loop is closed: so is the link
                self._loop.call_soon_threadsafe(self._write, data)

    def _write(self, data: bytes) -> None:
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        """Stop writing, once what is buffered has left."""
        self._transport.close()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
