"""Length-prefixed frames over an asyncio transport, with write coalescing.

A frame is a 4-byte big-endian length followed by that many bytes of msgpack
(:mod:`shoal.protocol.messages`). :class:`FramedProtocol` parses every complete
frame out of each chunk the socket delivers and hands messages to a callback,
without a task or an ``await`` per frame. Writes are coalesced: frames sent
during one turn of the event loop leave in a single ``transport.write`` at the end
of the turn, which is what keeps a map of many small inputs cheap.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from typing import Final

from shoal.protocol.messages import Message, ProtocolError, decode, encode

#: The length prefix: unsigned 32-bit big-endian.
_HEADER: Final = struct.Struct(">I")
#: Bytes a frame may hold beyond the payload it carries (ids, field tags).
FRAME_OVERHEAD: Final = 64 * 1024


def frame(message: Message) -> bytes:
    """Return ``message`` as one frame: length prefix plus body."""
    body = encode(message)
    return _HEADER.pack(len(body)) + body


class FramedProtocol(asyncio.Protocol):
    """Reads frames into messages and writes coalesced frames.

    Args:
        on_message: called with each message, in order, on the event loop.
        on_lost: called once when the connection closes, with the error if any.
        max_frame: frames longer than this close the connection (a peer that
            claims 4 GB is broken or hostile).
    """

    def __init__(
        self,
        on_message: Callable[[Message], None],
        on_lost: Callable[[BaseException | None], None],
        max_frame: int,
    ) -> None:
        self._on_message = on_message
        self._on_lost = on_lost
        #: Longest frame accepted; may be raised once the peer has authenticated.
        self.max_frame = max_frame
        self._buffer = bytearray()
        self._pending: list[bytes] = []
        self._flush_scheduled = False
        self.transport: asyncio.Transport | None = None
        self._closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        offset = 0
        size = len(buffer)
        while size - offset >= 4:
            (length,) = _HEADER.unpack_from(buffer, offset)
            if length > self.max_frame:
                self._fail(ProtocolError(f"frame of {length} bytes exceeds {self.max_frame}"))
                return
            end = offset + 4 + length
            if end > size:
                break
            body = bytes(buffer[offset + 4 : end])
            offset = end
            try:
                message = decode(body)
            except ProtocolError as exc:
                self._fail(exc)
                return
            self._on_message(message)
            if self._closed:
                return
        del buffer[:offset]

    def _fail(self, exc: BaseException) -> None:
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
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._closed or self.transport is None or not self._pending:
            self._pending.clear()
            return
        data = b"".join(self._pending)
        self._pending.clear()
        self.transport.write(data)

    def close(self) -> None:
        """Flush what is queued, then close the connection."""
        self._flush()
        if self.transport is not None:
            self.transport.close()
