"""Handles on a deployed app's functions and classes, found by name on a server.

``shoal.Function.from_name("app", "f")`` asks the server (``lookup``) what ``f``
is, and returns a :class:`~shoal.client.function.Function` whose app is a
:class:`DeployedApp`: every input goes to the server's pool of ``f`` over the
shared :class:`~shoal.client.connection.Connection`. A class found with
``shoal.Cls.from_name`` gives objects whose methods go to the pool of their
parameter set on the server.
"""

from __future__ import annotations

import pickle
from collections.abc import AsyncIterator, Callable
from typing import Any

from shoal.client.connection import Connection, ServerPool, connect
from shoal.client.map import MapProgress
from shoal.control.spec import CodeRef, FunctionSpec
from shoal.exception import InvalidError


class DeployedApp:
    """A deployed app as its looked-up handles see it (what ``App`` is to its own)."""

    def __init__(
        self,
        name: str,
        connection: Connection,
        parameters: bytes = b"",
        web_urls: dict[str, str | None] | None = None,
    ) -> None:
        self.name = name
        self.connection = connection
        self._parameters = parameters
        self._web_urls = web_urls or {}

    def web_url(self, name: str) -> str | None:
        return self._web_urls.get(name)

    def pool(self, name: str) -> ServerPool:
        return ServerPool(self.connection, self.name, name, self._parameters)

    def track(
        self, progress: MapProgress, chunks: AsyncIterator[list[Any]]
    ) -> AsyncIterator[list[Any]]:
        return chunks

    def declare(self, spec: FunctionSpec, code: Callable[[], CodeRef]) -> None:
        raise InvalidError(f"{spec.name} of deployed app {self.name!r}: redeploy to change it")


#: How to look up each kind of deployed object.
_LOOKUP_WITH = {"function": "shoal.Function.from_name", "class": "shoal.Cls.from_name"}


async def lookup(app: str, name: str, kind: str) -> tuple[Connection, dict[str, Any]]:
    """What the server knows of ``name`` in ``app`` (see ``Server._op_lookup``), which
    must be a ``kind`` ("function" or "class").

    Raises:
        NotFoundError: no such app or function.
        InvalidError: ``name`` is of the other kind.
        ConnectionError: no server.
    """
    connection = await connect()
    info = await connection.request("lookup", app=app, function=name)
    found = info.get("kind")
    if found != kind:
        raise InvalidError(f"{app}/{name} is a {found}: use {_LOOKUP_WITH.get(found, '?')}")
    return connection, info


def pickled_parameters(bound: dict[str, Any]) -> bytes:
    """A class object's parameters as the server keys its pool: the same values give the
    same bytes."""
    return pickle.dumps(dict(sorted(bound.items())), protocol=4) if bound else b""
