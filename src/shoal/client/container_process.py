"""A command running in a sandbox, and its streams: what ``Sandbox.exec`` returns, as
Modal's ``modal.container_process``.

``stdout`` and ``stderr`` are :class:`StreamReader`\\ s: ``read()`` reads to the end (a
second ``read()`` returns ``""``), and iterating yields lines (text) or chunks (bytes) as
they come. ``stdin`` is a :class:`StreamWriter`: ``write()`` buffers here (up to
:data:`STDIN_BUFFER` bytes: past it, ``BufferError``), ``drain()`` sends what is
buffered, ``write_eof()`` closes it once drained (a write after it: ``ValueError``).
Every method has an ``.aio`` form. Output nobody reads never blocks the command: the
server keeps what is unread, up to a bound, and past it drops the excess with a marker
line (see :mod:`shoal.server.sandboxes`).
"""

from __future__ import annotations

import codecs
import collections
from collections.abc import AsyncIterator, Iterator
from typing import Any, Generic, TypeVar

from shoal.bridge import bridged, iterate_async, iterate_sync
from shoal.client.objects import request
from shoal.exception import InvalidError

T = TypeVar("T", str, bytes)

#: Bytes ``stdin.write()`` buffers before a ``drain()``.
STDIN_BUFFER = 2 * 1024 * 1024
#: Seconds one server round trip waits for output before asking again.
_POLL = 10.0
#: Bytes asked for per round trip.
_CHUNK = 1024 * 1024


class StreamReader(Generic[T]):
    """``stdout`` or ``stderr`` of a command in a sandbox (see the module docstring)."""

    def __init__(self, sandbox_id: str, proc: int, fd: int, text: bool) -> None:
        self._sandbox_id = sandbox_id
        self._proc = proc
        self._fd = fd
        self._text = text
        self._offset = 0
        self._eof = False
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        #: Lines (or chunks) received and not yet handed out, and an unfinished line: kept
        #: here, not in an iterator, so ``next(iter(stream))`` twice loses nothing.
        self._held: collections.deque[Any] = collections.deque()
        self._partial = ""

    async def _next(self) -> bytes | None:
        """The next bytes written, waiting for them; None at the end."""
        while not self._eof:
            answer = await request(
                "sandbox_read",
                object_id=self._sandbox_id,
                proc=self._proc,
                fd=self._fd,
                offset=self._offset,
                wait=_POLL,
                limit=_CHUNK,
            )
            self._offset = answer["offset"]
            self._eof = bool(answer["eof"])
            if answer["data"]:
                return bytes(answer["data"])
        return None

    def _out(self, data: bytes, final: bool = False) -> Any:
        if not self._text:
            return data
        return self._decoder.decode(data, final)

    @bridged
    async def read(self) -> T:
        """Everything still to come, to the end (``""``/``b""`` once it was read)."""
        parts = [*self._held, self._partial] if self._text else [*self._held]
        self._held.clear()
        self._partial = ""
        while (data := await self._next()) is not None:
            parts.append(self._out(data))
        parts.append(self._out(b"", final=True))
        joined: Any = ("" if self._text else b"").join(parts)
        return joined  # type: ignore[no-any-return]

    async def _piece(self) -> T | None:
        """The next line (text; split at newlines only) or chunk (bytes); None at the end."""
        while not self._held:
            data = await self._next()
            if data is None:
                tail = self._partial + (self._out(b"", final=True) if self._text else "")
                self._partial = ""
                return tail or None  # type: ignore[return-value]
            if not self._text:
                return data  # type: ignore[return-value]
            text = self._partial + self._out(data)
            end = text.rfind("\n") + 1
            self._partial = text[end:]
            if end:
                self._held.extend(line + "\n" for line in text[: end - 1].split("\n"))
        piece: T = self._held.popleft()
        return piece

    async def _pieces(self) -> AsyncIterator[list[T]]:
        # One piece a chunk: an iterator dropped midway leaves the rest to the next one.
        while (piece := await self._piece()) is not None:
            yield [piece]

    def __iter__(self) -> Iterator[T]:
        return iterate_sync(self._pieces())

    def __aiter__(self) -> AsyncIterator[T]:
        return iterate_async(self._pieces())


class StreamWriter:
    """``stdin`` of a command in a sandbox (see the module docstring)."""

    def __init__(self, sandbox_id: str, proc: int) -> None:
        self._sandbox_id = sandbox_id
        self._proc = proc
        self._buffer = bytearray()
        self._eof = False
        self._eof_sent = False

    def write(self, data: str | bytes | bytearray | memoryview) -> None:
        """Buffer ``data`` (text is UTF-8) until :meth:`drain`.

        Raises:
            ValueError: after :meth:`write_eof`.
            BufferError: past :data:`STDIN_BUFFER` bytes not yet drained.
        """
        if self._eof:
            raise ValueError("stdin is closed: write_eof() was called")
        raw = data.encode() if isinstance(data, str) else bytes(data)
        if len(self._buffer) + len(raw) > STDIN_BUFFER:
            raise BufferError(f"stdin buffer full ({STDIN_BUFFER} bytes): drain() first")
        self._buffer += raw

    def write_eof(self) -> None:
        """Close stdin once what is buffered is drained."""
        self._eof = True

    @bridged
    async def drain(self) -> None:
        """Send what is buffered (and the end, after ``write_eof``)."""
        data, self._buffer = bytes(self._buffer), bytearray()
        send_eof = self._eof and not self._eof_sent
        if data or send_eof:
            await request(
                "sandbox_write",
                object_id=self._sandbox_id,
                proc=self._proc,
                data=data,
                eof=send_eof,
            )
            self._eof_sent = self._eof_sent or send_eof


class Exits:
    """Something that runs in a sandbox until it ends with an exit code, as Modal reports
    it: ``poll()`` asks once, ``returncode`` raises until the end is known. A subclass
    says how to ask (:meth:`_ask`: wait up to so many seconds; the code, or None)."""

    _returncode: int | None = None

    async def _ask(self, wait: float) -> int | None:
        raise NotImplementedError

    async def _until_ended(self) -> int:
        while self._returncode is None:
            await self._ask(_POLL)
        return self._returncode

    @bridged
    async def poll(self) -> int | None:
        """Its exit code if it has ended, else None."""
        if self._returncode is None:
            await self._ask(0)
        return self._returncode

    @property
    def returncode(self) -> int:
        """Its exit code.

        Raises:
            InvalidError: it is not known to have ended yet (call ``wait()`` or ``poll()``).
        """
        if self._returncode is None:
            raise InvalidError("call wait() (or poll()) before reading returncode")
        return self._returncode


class ContainerProcess(Exits, Generic[T]):
    """A command started by ``Sandbox.exec`` (see the module docstring)."""

    def __init__(self, sandbox_id: str, proc: int, text: bool = True) -> None:
        self._sandbox_id = sandbox_id
        self._proc = proc
        self._returncode: int | None = None
        self.stdout: StreamReader[T] = StreamReader(sandbox_id, proc, 1, text)
        self.stderr: StreamReader[T] = StreamReader(sandbox_id, proc, 2, text)
        self.stdin = StreamWriter(sandbox_id, proc)

    async def _ask(self, wait: float) -> int | None:
        answer = await request(
            "sandbox_proc_wait", object_id=self._sandbox_id, proc=self._proc, wait=wait
        )
        code = answer.get("code")
        if code is not None:
            self._returncode = int(code)
        return self._returncode

    @bridged
    async def wait(self) -> int:
        """Wait for it to exit; its exit code (-1 when its exec timeout ended it)."""
        return await self._until_ended()
