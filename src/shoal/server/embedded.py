"""The embedded default: the server's own code, run in the caller's process.

With no server configured or running (:func:`shoal.client.target.find_target`),
``app.run()`` and ``shoal run`` start a :class:`~shoal.server.server.Server` here,
on the client's background loop, and run the app on it as an ephemeral app, as they
would on a remote server: handles reach it through the same client connection,
over a pipe (:mod:`shoal.protocol.pipe`) instead of a socket, token first.

It differs from ``shoal server`` only in what it keeps and who can reach it: it
listens on no port, restores nothing, keeps its apps' inputs in a private
directory removed when the process exits, prints its containers' output to the
caller's terminal, and opens the home's store only for named objects (Dicts,
Queues, Volumes, Secrets), which then persist between runs as on a server.

One per process: it starts with the first app that runs on it (or the first
named-object operation), and stops, with its containers and fork servers, when the
last app that runs on it ends.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import secrets
import shutil

from shoal import settings
from shoal.control import run_dir
from shoal.protocol import pipe
from shoal.server.server import Server, ServerOptions
from shoal.server.store import Store

#: Where this process's clients reach it, and the token they present (the same for
#: every start in one process, so a client's connection outlives a stop and start).
URL = pipe.SCHEME + "embedded"
TOKEN = secrets.token_urlsafe(32)

_server: Server | None = None
_store: Store | None = None
#: Apps running on it now (``hold``/``release``).
_held = 0
_lock: asyncio.Lock | None = None


def _guard() -> asyncio.Lock:
    global _lock
    if _lock is None:
        _lock = asyncio.Lock()
    return _lock


async def ensure() -> None:
    """Start the embedded server unless it runs (on the background loop)."""
    global _server
    async with _guard():
        if _server is None:
            options = ServerOptions(
                home=settings.home(), http_port=None, embedded=True, token=TOKEN
            )
            server = Server(options, _private_store())
            await server.start()
            _server = server


def _private_store() -> Store:
    """Where every start of the embedded server in this process keeps its apps' inputs:
    opened once (a store takes tens of milliseconds to create and close, which each
    ``app.run()`` would pay), in a private directory removed when the process exits."""
    global _store
    if _store is None:
        directory = run_dir.create()
        atexit.register(shutil.rmtree, directory, True)
        _store = Store(os.path.join(directory, "shoal.db"))
        _store.start(asyncio.get_running_loop())
    return _store


async def hold() -> None:
    """:func:`ensure`, for an app that runs on it until it calls :func:`release`."""
    global _held
    await ensure()
    _held += 1


async def release() -> None:
    """An app that ran on it ended: stop it when it was the last."""
    global _server, _held
    _held -= 1
    async with _guard():
        if _held > 0 or _server is None:
            return
        server, _server = _server, None
        await server.stop()


def running() -> Server | None:
    """The embedded server while it runs (for tests and diagnostics)."""
    return _server
