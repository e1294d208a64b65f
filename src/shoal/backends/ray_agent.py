"""The Shoal agent on one Ray node: it owns everything Shoal runs there.

One agent per node, a Ray actor with no CPU of its own, pinned to its node and owned
by the server's process (so it dies with the server, and its containers with it:
each container watches its parent). Inside, it is the local backend
(:mod:`shoal.backends.local`) of that node:

- the node's fork servers, one per function's code and image, so a container starts
  in milliseconds as it does on one machine;
- the process tree of every container on the node;
- the node's cache of code bundles and built images, by digest: a bundle the node
  lacks is pushed by the server once (:meth:`Agent.put_bundle`), an image is built
  here from its recipe (the same recipe gives the same environment on every node).

What happens on the node comes back to the server as events that it collects with
one long-poll per agent (:meth:`Agent.events`): container exits, what containers
print, and image build lines. Nothing here imports Ray: the backend
(:mod:`shoal.backends.ray`) makes this class an actor.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from typing import Any, Final

from shoal.backends import isolation
from shoal.backends.base import ContainerLaunch, Preload
from shoal.backends.local import LocalBackend
from shoal.protocol import bundle
from shoal.spec.image import Environment, Recipe

#: Events one long-poll returns at most (output lines count one per batch).
MAX_EVENTS: Final = 4096
#: Events kept while no one polls; past it the oldest output is dropped (exits never).
MAX_BACKLOG: Final = 100_000


class Agent:
    """Runs containers on its node for one server (see the module docstring).

    Args:
        node_id: the Ray node it is pinned to.
        inherit_environment: containers start from the agent's whole environment (an
            embedded server's) or a built one (a server's).
        cache: where the node keeps bundles and images ("": a folder of its own).
    """

    def __init__(
        self, node_id: str, inherit_environment: bool, cache: str = "", isolated: bool = False
    ) -> None:
        self.node_id = node_id
        root = cache or os.path.join(tempfile.gettempdir(), f"shoal-node-{os.getuid()}")
        os.makedirs(root, mode=0o700, exist_ok=True)
        os.environ.setdefault("SHOAL_IMAGE_CACHE", os.path.join(root, "images"))
        self._backend = LocalBackend()
        self._backend.inherit_environment = inherit_environment
        self._backend.bundle_cache = os.path.join(root, "bundles")
        self._backend.on_output = self._output
        self._backend.fetch = self._fetch
        #: Containers run in jails, reaching the server through a relay (see backends/jailed.py
        #: and backends/control_relay.py), where bubblewrap works on this node.
        self._isolation_problem = isolation.problem() if isolated else ""
        self._backend.isolated = isolated and not self._isolation_problem
        #: ("exit", container id, code) / ("output", container id, stream, lines) /
        #: ("build", line): what the server has not collected yet.
        self._events: list[tuple[Any, ...]] = []
        self._changed = asyncio.Event()
        #: Bundles the server pushed or is about to, by digest.
        self._bundles: dict[str, asyncio.Future[bytes]] = {}

    async def ready(self) -> dict[str, Any]:
        """Answered once the actor runs: where it is, and why it cannot jail containers
        when it was asked to ("" when it can)."""
        return {"node": self.node_id, "pid": os.getpid(), "isolation": self._isolation_problem}

    # -- containers -------------------------------------------------------------------

    async def start(self, launch: ContainerLaunch) -> int | None:
        """Start a container on this node; its pid.

        Raises:
            OSError: it could not be started.
        """
        self._backend.control_address = launch.address
        return await self._backend.start(launch, self._exited)

    async def stop(self, container_id: str, grace: float) -> None:
        await self._backend.stop(container_id, grace)

    def running(self) -> list[str]:
        """The containers of this node that have not exited."""
        return self._backend.list()

    def rss(self, container_id: str) -> int | None:
        return self._backend.rss(container_id)

    async def prepare(self, preload: Preload, control_address: str = "") -> None:
        """Start ``preload``'s fork server here (a jailed one holds the relay to the
        control plane at ``control_address``)."""
        if control_address:
            self._backend.control_address = control_address
        await self._backend.prepare(preload)

    def release(self, preload: Preload) -> None:
        self._backend.release(preload)

    async def close(self) -> None:
        """Kill every container of this node, and its fork servers."""
        await self._backend.close()

    def _exited(self, container_id: str, code: int | None) -> None:
        self._push(("exit", container_id, code))

    def _output(self, container_id: str, stream: str, lines: list[str]) -> None:
        if len(self._events) >= MAX_BACKLOG:
            return  # nobody collects: drop output, never exits
        self._push(("output", container_id, stream, lines))

    def _push(self, event: tuple[Any, ...]) -> None:
        self._events.append(event)
        self._changed.set()

    async def events(self, wait: float) -> list[tuple[Any, ...]]:
        """What happened since the last call, waiting up to ``wait`` seconds for
        something to happen (the server's long-poll)."""
        if not self._events:
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), wait)
            except TimeoutError:
                return []
        taken, self._events = self._events[:MAX_EVENTS], self._events[MAX_EVENTS:]
        return taken

    # -- code and images --------------------------------------------------------------

    def has_bundle(self, digest: str) -> bool:
        """Whether code bundle ``digest`` is unpacked on this node (or on its way)."""
        return (
            digest in self._bundles or bundle.find(self._backend.bundle_cache, digest) is not None
        )

    def put_bundle(self, digest: str, data: bytes) -> None:
        """The server pushes code bundle ``digest`` (a fork server that waits gets it)."""
        future = self._bundles.setdefault(digest, asyncio.get_running_loop().create_future())
        if not future.done():
            future.set_result(data)

    async def _fetch(self, kind: str, digest: str) -> bytes:
        future = self._bundles.setdefault(digest, asyncio.get_running_loop().create_future())
        return await future

    async def build_image(self, recipe: Recipe) -> Environment:
        """Build ``recipe`` on this node (once; the lines go back as events).

        Raises:
            ImageBuildError: a step failed.
        """
        return await self._backend.build_image(recipe, lambda line: self._push(("build", line)))
