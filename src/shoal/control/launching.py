"""Launching and retiring a pool's containers.

A pool asks its backend for a container when the policy says so (and the
machine has room: :mod:`~shoal.control.budget`), binds the container's
connection when it dials in and tells it what to load, and takes it out of
service when it idles, is stopped, or goes over its memory limit: a retired
container drains (takes no new input) and stops once its inputs finish. Each
step is published on the event bus with its reason.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Coroutine
from typing import Any, Final

from shoal import settings
from shoal.backends.base import MACHINE_LOST, MachineLost
from shoal.control.containers import ContainerHandle, ContainerState
from shoal.control.pool_state import PoolState
from shoal.protocol.framing import FramedProtocol
from shoal.protocol.messages import (
    Load,
    Shutdown,
)
from shoal.spec.events import (
    ContainerDraining,
    ContainerReady,
    ContainerStarting,
    StopReason,
)
from shoal.spec.resources import Grant

#: Seconds between looks at the memory of containers that have a memory limit.
MEMORY_CHECK: Final = 0.5


class Launching(PoolState):
    """Starting, binding, draining and stopping a pool's containers."""

    def stop_container(self, container_id: str) -> bool:
        """Retire container ``container_id`` (it stops once its inputs finish); return
        whether this pool has it."""
        handle = self._containers.get(container_id)
        if handle is None or handle.state is ContainerState.STOPPED:
            return False
        self._retire(handle, "stop")
        self._pump()
        return True

    def _start_container(self, grant: Grant | None) -> None:
        number = next(self._numbers)
        container_id = f"{self._prefix}-c{number}"
        handle = self._containers.create(container_id, self.spec.scaling.max_inputs)
        handle.grant = grant
        if self._on_starting:
            self._on_starting.publish(
                ContainerStarting(self._prefix, container_id, handle.started_at)
            )
        self._spawn(self._launch(handle))

    async def _launch(self, handle: ContainerHandle) -> None:
        label = self._label + handle.container_id.removeprefix(self._prefix)
        launch = self._launcher(handle.container_id, label, handle.grant)
        launch = dataclasses.replace(
            launch,
            preload=self._preload,
            image=self._preload.image,
            env={**self._env, **launch.env},
            cpu_limit=self.spec.resources.cpu_limit,
            memory_limit=self.spec.resources.memory_limit,
        )
        try:
            handle.pid = await self._backend.start(launch, self._on_exit)
        except MachineLost as exc:  # no fault of the function's: start another elsewhere
            self._container_gone(handle, f"was lost with its node ({exc})", "crash", blame=False)
        except OSError as exc:
            self._container_gone(handle, f"could not be started ({exc})", "crash")

    def _retire(self, handle: ContainerHandle, reason: StopReason) -> None:
        """Take ``handle`` out of service for ``reason``; it stops once its inputs finish."""
        if handle.live:
            self._drain(handle, reason)
        self._stop_if_drained(handle)

    def _drain(self, handle: ContainerHandle, reason: StopReason) -> None:
        handle.stop_reason = reason
        self._containers.move(handle, ContainerState.DRAINING)
        if self._on_draining:
            self._on_draining.publish(
                ContainerDraining(self._prefix, handle.container_id, reason, self._clock())
            )

    def _stop_if_drained(self, handle: ContainerHandle) -> None:
        if handle.state is ContainerState.DRAINING and not handle.running:
            handle.send(Shutdown())
            self._spawn(self._backend.stop(handle.container_id, settings.shutdown_grace()))

    def owns(self, container_id: str) -> bool:
        """Whether ``container_id`` is one of this pool's live containers."""
        return self._containers.get(container_id) is not None

    def attach(self, container_id: str, conn: FramedProtocol) -> ContainerHandle | None:
        """Bind a container's authenticated connection and tell it what to load.

        Returns ``None`` (the caller closes the connection) when the container is
        unknown, already connected, or no longer wanted.
        """
        handle = self._containers.get(container_id)
        if handle is None or handle.conn is not None or handle.state is not ContainerState.STARTING:
            return None
        handle.conn = conn
        code = self._code
        conn.send(
            Load(
                function_name=self.spec.name,
                module_kind=code.module_kind,
                module_name=code.module_name,
                module_file=code.module_file,
                sys_path=list(code.sys_path),
                qualname=code.qualname,
                serialized=code.serialized,
                max_inputs=handle.max_inputs,
                timeout=self.spec.timeout,
                parameters=code.parameters,
                bundle=code.bundle,
            )
        )
        return handle

    def on_disconnect(self, handle: ContainerHandle) -> None:
        """The container's connection closed: it is gone, whether or not it exited yet."""
        self._kill(handle, "disconnected", handle.stop_reason or "crash")

    def _on_ready(self, handle: ContainerHandle, enter: float = 0.0) -> None:
        if handle.state is not ContainerState.STARTING:
            return
        self._containers.move(handle, ContainerState.READY)
        self._health.ready()
        if self._on_up:
            now = self._clock()
            self._on_up.publish(
                ContainerReady(
                    self._prefix, handle.container_id, now - handle.started_at, now, enter
                )
            )
        self._pump()

    def _on_exit(self, container_id: str, code: int | None) -> None:
        handle = self._containers.get(container_id)
        if handle is None:
            return
        if code == MACHINE_LOST:
            self._container_gone(handle, "was lost with its node", "crash", blame=False)
        else:
            self._container_gone(handle, f"exited with code {code}", handle.stop_reason or "crash")

    def _kill(self, handle: ContainerHandle, detail: str, reason: StopReason) -> None:
        self._container_gone(handle, detail, reason)
        self._spawn(self._backend.stop(handle.container_id, 0.0))

    def _arm_memory_check(self) -> None:
        self._memory_check = asyncio.get_running_loop().call_later(MEMORY_CHECK, self._check_memory)

    def _check_memory(self) -> None:
        """Stop containers over the function's memory limit; their inputs are told why."""
        limit = self.spec.resources.memory_limit
        assert limit is not None
        for handle in self._containers:
            used = self._backend.rss(handle.container_id)
            if used is not None and used > limit:
                self._kill(
                    handle,
                    f"was stopped: it used {used} MiB, over its memory limit of {limit} MiB,",
                    "oom",
                )
        if not self._closed:
            self._arm_memory_check()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
