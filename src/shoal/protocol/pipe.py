"""An in-process connection: message objects handed from one end to the other.

The embedded default runs the server in the caller's own process
(:mod:`shoal.server.embedded`). Its clients reach it through a pipe instead of a
socket: the two ends speak the same messages, in the same order, token first,
but a message is handed over as the object it is, with no frame, no encoding and
no system call. Both ends live on one event loop.

A server offers pipes under a URL of its own (:func:`listen`, ``local://NAME``);
a client dials it (:func:`dial`). A :class:`PipeEnd` offers what the server's
sessions and the client's connection use of a
:class:`~shoal.protocol.framing.FramedProtocol`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from shoal.protocol.framing import FrameParser
from shoal.protocol.messages import Message

SCHEME = "local://"
#: Servers that take pipes, by URL: each makes the server's end of a new pipe.
_listeners: dict[str, Callable[[], PipeEnd]] = {}


class PipeEnd:
    """One end of a pipe (see the module docstring).

    Args:
        on_message: called with each message the other end sent, in order, on the loop.
        on_lost: called once when the pipe closes (either end closing it).
        max_frame: kept for the interface of a framed connection; a message handed
            over is not framed, so no limit applies to it here.
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
        self.peer: PipeEnd | None = None
        self._closed = False

    def send(self, message: Message) -> None:
        """Hand ``message`` to the other end now: nothing is framed or written, so waiting
        for the loop's next turn would only add latency. What the other end's handler
        raises is reported to the loop, as a callback's would be."""
        peer = self.peer
        if self._closed or peer is None or peer._closed:
            return
        try:
            peer._on_message(message)
        except Exception as exc:  # the sender is not to blame for its peer's bug
            asyncio.get_running_loop().call_exception_handler(
                {
                    "message": f"a pipe's receiver failed on {type(message).__name__}",
                    "exception": exc,
                }
            )

    def close(self) -> None:
        """Close the pipe at both ends."""
        self.abort()

    def abort(self) -> None:
        """Close the pipe at once: nothing more passes; both ends' ``on_lost`` run."""
        if self._closed:
            return
        self._lose()
        peer = self.peer
        if peer is not None and not peer._closed:
            asyncio.get_running_loop().call_soon(peer._lose)

    def _lose(self) -> None:
        if not self._closed:
            self._closed = True
            self._on_lost(None)


def listen(name: str, accept: Callable[[], PipeEnd]) -> str:
    """Take pipes at ``local://NAME``: ``accept`` makes the server's end of each; return
    the URL.

    Raises:
        OSError: something in this process listens there already.
    """
    url = SCHEME + name
    if url in _listeners:
        raise OSError(f"{url} is taken in this process")
    _listeners[url] = accept
    return url


def unlisten(url: str) -> None:
    """Take no more pipes at ``url`` (those open stay until closed)."""
    _listeners.pop(url, None)


def dial(url: str, end: PipeEnd) -> None:
    """Join ``end`` to a new server end at ``url``.

    Raises:
        ConnectionRefusedError: nothing listens at ``url`` (in this process).
    """
    accept = _listeners.get(url)
    if accept is None:
        raise ConnectionRefusedError(f"nothing listens at {url} in this process")
    server_end = accept()
    end.peer, server_end.peer = server_end, end
