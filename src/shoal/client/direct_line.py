"""A thread's own blocking line to a server, for ``f.remote()`` called from plain threads.

The shared :class:`~shoal.client.connection.Connection` lives on the background
loop, so a blocking call through it crosses two thread hand-offs (caller → loop,
loop → caller): about a fifth of a warm ``.remote()``'s latency through a server
on a 2-core machine. A thread that calls a server's function with ``.remote()``
writes its ``Submit`` on a socket of its own instead and reads the outcome from
it, with no loop in between. The line authenticates like any connection (token
first) and carries only plain calls, one at a time; everything else (maps,
spawns, generators, ``.aio``, requests) keeps the shared connection.

One line per thread and server, opened on the thread's first call and closed
with the thread; at most :data:`MAX_LINES` per process (further threads use the
shared connection). A line that breaks mid-call fails that call with
``ConnectionError``, as the shared connection does; an interrupted wait (Ctrl-C)
closes the line, and the server cancels the input of a client that went away.
"""

from __future__ import annotations

import itertools
import os
import threading
import weakref

from shoal import exception, settings
from shoal.protocol import payload, transport
from shoal.protocol.framing import FRAME_OVERHEAD, FrameParser, frame
from shoal.protocol.messages import (
    CallDone,
    ClientHello,
    DoneMany,
    Message,
    OutputStatus,
    ProtocolError,
    Submit,
    Welcome,
)

#: Lines a process keeps open at most (one per calling thread and server).
MAX_LINES = 64
#: Seconds a line waits for the server to accept the token.
_HELLO_TIMEOUT = 10.0
#: Bytes read from the socket at a time.
_READ_SIZE = 256 * 1024

_lock = threading.Lock()
_open: weakref.WeakSet[Line] = weakref.WeakSet()
#: This thread's lines, by server URL and token; None where one could not be opened.
_local = threading.local()


class Line:
    """One thread's authenticated blocking socket to one server.

    Raises (on construction):
        OSError: nothing answers at the URL.
        ConnectionError: the server refused the token or broke the handshake.
    """

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.pid = os.getpid()
        self._ids = itertools.count(1)
        self._parser = FrameParser(settings.max_payload_bytes() + FRAME_OVERHEAD)
        self._sock = transport.connect(url)
        weakref.finalize(self, self._sock.close)
        self._sock.settimeout(_HELLO_TIMEOUT)
        try:
            self._sock.sendall(frame(ClientHello(token, f"pid {self.pid} (line)")))
            if not any(isinstance(m, Welcome) for m in self._read()):
                raise exception.ConnectionError(f"the server at {url} did not welcome the line")
        except BaseException:
            self._sock.close()
            raise
        self._sock.settimeout(None)

    def next_id(self) -> str:
        return f"l{next(self._ids)}"

    def call(self, submit: Submit) -> CallDone:
        """Send ``submit`` and block until its outcome arrives.

        A broken line yields an error outcome (``ConnectionError``) and closes; an
        interrupted wait closes the line (the server cancels the input) and re-raises.
        """
        try:
            self._sock.sendall(frame(submit))
            while True:
                for message in self._read():
                    done = _outcome_of(message, submit.call_id)
                    if done is not None:
                        return done
        except (OSError, ProtocolError, exception.ConnectionError):
            self.close()
            lost = exception.ConnectionError(f"the connection to the server at {self.url} closed")
            return CallDone(submit.call_id, OutputStatus.ERROR, payload.dumps((lost, ""), "e"))
        except BaseException:
            self.close()
            raise

    def _read(self) -> list[Message]:
        """The messages of the next read (maybe none: a frame may span reads).

        Raises:
            ConnectionError: the server closed the line.
        """
        data = self._sock.recv(_READ_SIZE)
        if not data:
            raise exception.ConnectionError(f"the server at {self.url} closed the line")
        return self._parser.feed(data)

    def close(self) -> None:
        self._sock.close()
        lines = getattr(_local, "lines", {})
        for key, line in list(lines.items()):
            if line is self:
                del lines[key]


def _outcome_of(message: Message, call_id: str) -> CallDone | None:
    if isinstance(message, CallDone) and message.call_id == call_id:
        return message
    if isinstance(message, DoneMany) and call_id in message.call_ids:
        at = list(message.call_ids).index(call_id)
        return CallDone(call_id, message.statuses[at], message.data[at])
    return None


def line_for(url: str, token: str) -> Line | None:
    """This thread's line to the server at ``url``, opened on first use; None when the
    process has :data:`MAX_LINES` open already or the line could not be opened (the
    shared connection then carries the call, and reports what is wrong)."""
    lines: dict[tuple[str, str], Line | None] | None = getattr(_local, "lines", None)
    if lines is None:
        lines = _local.lines = {}
    key = (url, token)
    if key in lines:
        line = lines[key]
        if line is None or line.pid == os.getpid():
            return line
        del lines[key]  # inherited through fork: the parent's socket, not ours
    with _lock:
        if len(_open) >= MAX_LINES:
            return None
        try:
            line = Line(url, token)
        except (OSError, exception.Error):
            line = None
        else:
            _open.add(line)
    lines[key] = line
    return line
