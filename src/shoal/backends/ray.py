"""Containers on a Ray cluster: one pool of containers across many machines.

Ray hosts the processes, holds their resources and adds machines; Shoal keeps its
own autoscaler, dispatcher and per-input semantics. The pieces:

- **An agent per node** (:mod:`shoal.backends.ray_agent`): a Ray actor with no CPU
  of its own, pinned to its node with a hard node-affinity, owned by this process.
  It runs the node's fork servers and containers, and keeps the node's code bundles
  and images by digest. Agents come and go with the nodes: a watcher asks Ray for the
  alive nodes every :data:`NODE_POLL` seconds, starts an agent on each new one, and
  reports the node set to the control plane (:attr:`on_nodes`), whose ledger
  (:mod:`shoal.control.placement`) then places containers on it.
- **Placement is Shoal's.** The control plane picks the node; :meth:`RayBackend.start`
  asks that node's agent to start the container, one actor call (about a millisecond),
  never a new Ray actor per container (hundreds of milliseconds). Each container's
  resources are then also held in Ray, as a one-bundle placement group on its node,
  so other Ray work on the cluster does not oversubscribe the node (that group is
  made after the container starts, so Ray's books lag Shoal's by a moment).
- **More machines when demand exceeds the cluster.** Containers that fit on no node
  wait in their pool's queue (``stats().waiting_for`` says why); their shapes go to
  Ray's autoscaler (``request_resources``), so a cluster with one adds nodes, and the
  containers start there as soon as the new node's agent is up.
- **Containers reach the control plane over TCP** with their own token; the control
  plane listens on the address of this process's Ray node (``127.0.0.1`` for a
  cluster on one machine).

A node that dies takes its agent, fork servers and containers with it: each of its
containers is reported as exited (their inputs go back to the queue and run
elsewhere), and the node leaves the ledger. When this process dies, Ray ends the
actors it owns, so no agent or container outlives the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import sys
import threading
from collections.abc import Sequence
from typing import Any, Final

from shoal import log, settings
from shoal.backends.base import (
    MACHINE_LOST,
    Backend,
    BuildLog,
    ContainerLaunch,
    MachineLost,
    OnExit,
    Preload,
)
from shoal.backends.ray_agent import Agent
from shoal.exception import ConnectionError, InvalidError
from shoal.spec.image import Environment, Recipe
from shoal.spec.resources import DEFAULT_MEMORY, Grant, Machine, Resources

#: Seconds between two looks at the cluster's nodes.
NODE_POLL: Final = 1.0
#: Seconds one long-poll of an agent's events waits for something to happen.
EVENT_WAIT: Final = 2.0
#: Seconds attaching to the cluster may take.
CONNECT: Final = 30.0
#: Seconds an agent may take to come up on a new node.
AGENT_START: Final = 60.0


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise InvalidError("the ray backend needs Ray: pip install 'shoal[ray]'") from None
    return ray


class _Node:
    """One node's agent, as this process knows it."""

    def __init__(self, node_id: str, machine: Machine, actor: Any) -> None:
        self.node_id = node_id
        self.machine = machine
        self.actor = actor
        self.up: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.containers: set[str] = set()
        self.bundles: set[str] = set()
        self.images: dict[str, asyncio.Future[Environment]] = {}
        self.prepared: set[Preload] = set()
        self.poller: asyncio.Task[None] | None = None
        self.alive = True


class RayBackend(Backend):
    """Runs containers on the nodes of a Ray cluster (see the module docstring).

    ``SHOAL_RAY_ADDRESS`` (``shoal server --ray-address``) names the cluster: a GCS
    address such as ``127.0.0.1:6379``, or ``auto`` for the one ``ray start`` left
    on this machine.
    """

    inherit_environment = False
    #: A node may join that fits what no node fits now: such containers wait.
    elastic = True
    #: Containers run on other machines: they reach the control plane over TCP.
    one_machine = False

    def __init__(self, address: str | None = None) -> None:
        self._address = address or settings.ray_address()
        self._ray: Any = None
        self._agent_class: Any = None
        self._nodes: dict[str, _Node] = {}
        #: The node of each container started and not yet reported exited.
        self._where: dict[str, _Node] = {}
        self._exits: dict[str, OnExit] = {}
        #: Exit codes of containers that exited, until stop() has seen them.
        self._exited: dict[str, asyncio.Event] = {}
        #: Each container's placement group (its resources, held in Ray).
        self._groups: dict[str, Any] = {}
        self._recipes: dict[str, Recipe] = {}
        #: Who hears the lines of the image builds under way (see build_image).
        self._build_logs: list[BuildLog] = []
        self._watcher: asyncio.Task[None] | None = None
        self._closed = False
        #: The autoscaler's next request, while one is due this loop turn (see want).
        self._wanted: list[dict[str, float]] | None = None

    # -- the cluster ----------------------------------------------------------------

    async def open(self) -> None:
        """Attach to the cluster and start an agent on each alive node.

        Raises:
            ConnectionError: no Ray cluster answers at the address.
        """
        ray = _import_ray()
        self._ray = ray
        if not ray.is_initialized():
            try:
                await self._attach(ray)
            except (OSError, RuntimeError, ValueError, TimeoutError) as exc:
                raise ConnectionError(
                    f"no Ray cluster at {self._address!r} ({str(exc) or 'no answer'}); start one "
                    "with `ray start --head` and give its address (--ray-address or "
                    "SHOAL_RAY_ADDRESS)"
                ) from None
        self.host = ray.util.get_node_ip_address()
        self._agent_class = ray.remote(num_cpus=0, max_restarts=0, max_concurrency=1000)(Agent)
        await self._refresh_nodes()
        self._watcher = asyncio.create_task(self._watch_nodes())

    async def _attach(self, ray: Any) -> None:
        """``ray.init`` on a thread of its own, for at most :data:`CONNECT` seconds: Ray
        keeps retrying an address where nothing answers, and a thread of the loop's
        executor would hold up the process's exit until it gave up.

        Raises:
            OSError: nothing listens at a ``host:port`` address.
            TimeoutError: the cluster did not answer in time.
        """
        host, _, port = self._address.rpartition(":")
        if host and port.isdigit():  # a GCS address: is anything there at all?
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), CONNECT)
            writer.close()
        loop = asyncio.get_running_loop()
        attached: asyncio.Future[None] = loop.create_future()

        def attach() -> None:
            try:
                self._connect(ray)
            except BaseException as exc:
                loop.call_soon_threadsafe(_settle, attached, exc)
            else:
                loop.call_soon_threadsafe(_settle, attached, None)

        threading.Thread(target=attach, name="shoal-ray-attach", daemon=True).start()
        await asyncio.wait_for(attached, CONNECT)

    def _connect(self, ray: Any) -> None:
        ray.init(
            address=self._address,
            namespace="shoal",
            logging_level=logging.WARNING,
            log_to_driver=False,
            configure_logging=False,
            ignore_reinit_error=True,
        )

    def machines(self) -> dict[str, Machine]:
        """The nodes whose agents are up, by node id."""
        return {n.node_id: n.machine for n in self._nodes.values() if n.up.done() and n.alive}

    async def _watch_nodes(self) -> None:
        while not self._closed:
            await asyncio.sleep(NODE_POLL)
            with contextlib.suppress(Exception):  # a GCS hiccup: look again next time
                await self._refresh_nodes()

    async def _refresh_nodes(self) -> None:
        alive = await asyncio.to_thread(self._alive_nodes)
        for node_id, node in list(self._nodes.items()):
            if node_id not in alive and node.alive:
                self._lost(node)
        starting = [
            self._start_agent(node_id, machine)
            for node_id, machine in alive.items()
            if node_id not in self._nodes
        ]
        if starting:
            await asyncio.gather(*starting, return_exceptions=True)

    def _alive_nodes(self) -> dict[str, Machine]:
        nodes = {}
        for info in self._ray.nodes():
            if not info.get("Alive"):
                continue
            resources = dict(info.get("Resources", {}))
            nodes[info["NodeID"]] = machine_of(resources)
        return nodes

    async def _start_agent(self, node_id: str, machine: Machine) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        actor = self._agent_class.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
            name=None,
        ).remote(node_id, self.inherit_environment, "", self.isolated)
        node = self._nodes[node_id] = _Node(node_id, machine, actor)
        try:
            said = await asyncio.wait_for(_await(actor.ready.remote()), AGENT_START)
            if said.get("isolation"):  # asked to jail its containers, and it cannot
                _print(f"node {node_id[:12]} left out: it cannot isolate: {said['isolation']}")
                raise OSError(said["isolation"])
        except Exception as exc:
            node.up.set_exception(exc)
            node.up.exception()  # seen here: the node is left out
            node.alive = False
            return
        node.up.set_result(None)
        node.poller = asyncio.create_task(self._poll(node))
        self._tell_nodes()

    def _tell_nodes(self) -> None:
        if self.on_nodes is not None:
            self.on_nodes(self.machines())

    def _lost(self, node: _Node) -> None:
        """``node`` died: each of its containers has exited, and it leaves the ledger."""
        node.alive = False
        if node.poller is not None:
            node.poller.cancel()
        for container_id in list(node.containers):
            self._report_exit(container_id, MACHINE_LOST)
        self._tell_nodes()

    async def _poll(self, node: _Node) -> None:
        """Collect ``node``'s events as they happen, until it dies."""
        while node.alive:
            try:
                events = await _await(node.actor.events.remote(EVENT_WAIT))
            except Exception:
                if not self._closed:
                    self._lost(node)
                return
            for event in events:
                self._on_event(node, event)

    def _on_event(self, node: _Node, event: tuple[Any, ...]) -> None:
        kind = event[0]
        if kind == "exit":
            self._report_exit(event[1], event[2])
        elif kind == "output" and self.on_output is not None:
            self.on_output(event[1], event[2], event[3])
        elif kind == "build":  # to whoever waits for a build, else this process's output
            for log in list(self._build_logs) or [_print]:
                log(f"[{node.node_id[:8]}] {event[1]}")

    def _report_exit(self, container_id: str, code: int | None) -> None:
        node = self._where.pop(container_id, None)
        if node is not None:
            node.containers.discard(container_id)
        group = self._groups.pop(container_id, None)
        if group is not None:
            with contextlib.suppress(Exception):
                self._ray.util.remove_placement_group(group)
        on_exit = self._exits.pop(container_id, None)
        exited = self._exited.pop(container_id, None)
        if exited is not None:
            exited.set()
        if on_exit is not None:
            on_exit(container_id, code)

    # -- containers -------------------------------------------------------------------

    async def start(self, launch: ContainerLaunch, on_exit: OnExit) -> int | None:
        node = self._nodes.get(launch.node)
        if node is None or not node.alive:
            raise MachineLost(f"node {launch.node[:12]} is not in the cluster any more")
        try:
            await self._ready_for(node, launch.preload, launch.image)
        except self._ray.exceptions.RayActorError:
            self._lost(node)
            raise MachineLost(f"node {launch.node[:12]} was lost") from None
        self._where[launch.container_id] = node
        self._exits[launch.container_id] = on_exit
        self._exited[launch.container_id] = asyncio.Event()
        node.containers.add(launch.container_id)
        placed = dataclasses.replace(launch, env={**launch.env, "SHOAL_NODE": node.node_id})
        try:
            pid: int | None = await _await(node.actor.start.remote(placed))
        except Exception as exc:
            self._where.pop(launch.container_id, None)
            self._exits.pop(launch.container_id, None)
            self._exited.pop(launch.container_id, None)
            node.containers.discard(launch.container_id)
            if isinstance(exc, self._ray.exceptions.RayActorError):
                self._lost(node)
                raise MachineLost(f"node {launch.node[:12]} was lost") from None
            raise OSError(f"could not start {launch.container_id} on its node: {exc}") from None
        self._hold(launch)
        return pid

    def _hold(self, launch: ContainerLaunch) -> None:
        """Hold the container's resources in Ray's books, on its node."""
        bundle = bundle_of(launch.grant)
        if not bundle:
            return
        with contextlib.suppress(Exception):  # Ray's books only: the container runs anyway
            self._groups[launch.container_id] = self._ray.util.placement_group(
                [bundle],
                strategy="STRICT_PACK",
                bundle_label_selector=[{"ray.io/node-id": launch.node}],
            )

    async def _ready_for(self, node: _Node, preload: Preload | None, image: str) -> None:
        """Get ``node`` what a container of ``preload`` needs: its code bundle, its image
        built, its fork server started."""
        if image and image not in node.images:
            recipe = self._recipes.get(image)
            if recipe is None:
                raise OSError(f"image {image} was not built by this backend")
            node.images[image] = asyncio.ensure_future(
                _await(node.actor.build_image.remote(recipe))
            )
        if image:
            await node.images[image]
        if preload is not None and preload.bundle and preload.bundle not in node.bundles:
            node.bundles.add(preload.bundle)
            has = await _await(node.actor.has_bundle.remote(preload.bundle))
            if not has and self.fetch is not None:
                data = await self.fetch("bundle", preload.bundle)
                await _await(node.actor.put_bundle.remote(preload.bundle, data))
        if preload is not None and preload not in node.prepared:
            node.prepared.add(preload)
            await _await(node.actor.prepare.remote(preload, self.control_address))

    async def stop(self, container_id: str, grace: float) -> None:
        node = self._where.get(container_id)
        exited = self._exited.get(container_id)
        if node is None or exited is None:
            return
        with contextlib.suppress(Exception):
            await _await(node.actor.stop.remote(container_id, grace))
        await exited.wait()

    def list(self) -> list[str]:
        return list(self._where)

    async def prepare(self, preload: Preload) -> None:
        """Start ``preload``'s fork server on every node, ahead of its first container."""
        nodes = [n for n in self._nodes.values() if n.alive and n.up.done()]
        # A node that cannot prepare starts fresh interpreters instead: errors are dropped.
        await asyncio.gather(
            *(self._ready_for(n, preload, preload.image) for n in nodes), return_exceptions=True
        )

    def release(self, preload: Preload) -> None:
        for node in self._nodes.values():
            if preload in node.prepared and node.alive:
                node.prepared.discard(preload)
                node.actor.release.remote(preload)

    async def build_image(self, recipe: Recipe, log: BuildLog) -> Environment:
        """Build ``recipe`` on every node (a node that joins later builds it on its first
        container of it); the first build's environment describes them all."""
        nodes = [n for n in self._nodes.values() if n.alive and n.up.done()]
        if not nodes:
            raise InvalidError("the Ray cluster has no node to build an image on")
        futures = []
        for node in nodes:
            future = node.images.get(recipe.digest())
            if future is None:
                future = node.images[recipe.digest()] = asyncio.ensure_future(
                    _await(node.actor.build_image.remote(recipe))
                )
            futures.append(future)
        self._build_logs.append(log)
        try:
            built: list[Environment] = await asyncio.gather(*futures)
        finally:
            self._build_logs.remove(log)
        self._recipes[recipe.digest()] = recipe
        log(f"[image {recipe.digest()[:12]}] built on {len(nodes)} node(s)")
        return built[0]

    def want(self, shapes: Sequence[Resources]) -> None:
        """Tell Ray's autoscaler what the cluster must hold: the containers held and those
        that fit on no node now (Ray counts what runs against it, and keeps the nodes it
        needs for it; an empty list withdraws the request). A burst of starts and exits
        makes one request a loop turn, not one each."""
        if self._ray is None:
            return
        first = self._wanted is None
        self._wanted = [demand_of(shape) for shape in shapes]
        if first:
            asyncio.get_running_loop().call_soon(self._ask)

    def _ask(self) -> None:
        bundles, self._wanted = self._wanted, None
        with contextlib.suppress(Exception):  # a cluster without an autoscaler ignores it
            from ray.autoscaler.sdk import request_resources

            request_resources(bundles=bundles)

    async def close(self) -> None:
        """Kill every container and agent, give back every resource held in Ray."""
        self._closed = True
        if self._watcher is not None:
            self._watcher.cancel()
        nodes = [n for n in self._nodes.values() if n.alive and n.up.done()]
        await asyncio.gather(
            *(_await(n.actor.close.remote()) for n in nodes), return_exceptions=True
        )
        for container_id in list(self._where):
            self._report_exit(container_id, None)
        for node in self._nodes.values():
            node.alive = False
            if node.poller is not None:
                node.poller.cancel()
            with contextlib.suppress(Exception):
                self._ray.kill(node.actor)
        self._nodes.clear()
        self._wanted = []  # withdraw the request now: the loop may not turn again
        self._ask()


def machine_of(resources: dict[str, float]) -> Machine:
    """A node's room from Ray's resources of it (memory in bytes, custom ones as named;
    Ray's own bookkeeping resources left out)."""
    custom = tuple(
        sorted(
            (name, float(amount))
            for name, amount in resources.items()
            if name not in ("CPU", "GPU", "memory", "object_store_memory")
            and not name.startswith(("node:", "accelerator_type:", "bundle_group_"))
            and "_group_" not in name
        )
    )
    model = next(
        (name.partition(":")[2] for name in resources if name.startswith("accelerator_type:")),
        "GPU",
    )
    gpus = tuple((index, model) for index in range(int(resources.get("GPU", 0))))
    return Machine(
        float(resources.get("CPU", 0.0)),
        int(resources.get("memory", 0) // (1 << 20)),
        gpus,
        custom,
    )


def bundle_of(need: Resources | Grant | None) -> dict[str, float]:
    """What one container holds, in Ray's words (memory in bytes)."""
    if need is None:
        return {}
    bundle: dict[str, float] = {"CPU": need.cpu, "memory": float(need.memory << 20)}
    gpus = need.gpu_count if isinstance(need, Resources) else len(need.gpus)
    if gpus:
        bundle["GPU"] = float(gpus)
    for name, amount in need.custom:
        bundle[name] = amount
    return bundle


def demand_of(need: Resources) -> dict[str, float]:
    """What the autoscaler is asked to add room for, for one container: its bundle, less
    the default memory reservation. Ray learns a node type's memory from its first
    running node, so a demand naming memory fits no type not yet running (and none is
    ever added for it); Ray's own tasks and replicas ask for memory only when their user
    does, and so does this: above the default, the memory is part of the demand."""
    demand = bundle_of(need)
    if need.memory <= DEFAULT_MEMORY:
        del demand["memory"]
    return demand


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


def _print(line: str) -> None:
    log.say(line, component="ray", stream=sys.stdout)


async def _await(ref: Any) -> Any:
    """The value of Ray object ``ref``, awaited on this loop."""
    return await asyncio.wrap_future(ref.future())
