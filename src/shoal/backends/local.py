"""Containers as child processes of this machine: the embedded default backend.

A container is forked from the function's warm fork server
(:mod:`~shoal.backends.fork_server`) when it is safe to fork, and otherwise
started as ``python -m shoal.container``. Either way it runs in a session of its
own (so a Ctrl-C at the terminal reaches the caller, not every container), with
stdout and stderr piped back and printed line by line with the container's label.
A container exits by itself when its control plane's connection closes or its
parent process dies, so none outlives the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import IO, Any, TextIO

from shoal import settings
from shoal.backends import cgroups, control_relay, isolation, jailed
from shoal.backends.base import (
    Backend,
    BuildLog,
    ContainerLaunch,
    OnExit,
    Preload,
    base_environment,
)
from shoal.backends.fork_server import ForkServer
from shoal.backends.image_build import ImageBuilder
from shoal.log import relayed
from shoal.protocol import bundle, transport
from shoal.spec.function import locate
from shoal.spec.image import Environment, Recipe
from shoal.spec.log_line import unmarked

#: Bytes read from a container's pipe at a time.
_CHUNK = 64 * 1024
#: Seconds a dead container's remaining output may take to arrive.
_DRAIN = 1.0


@dataclass
class _Child:
    """One container process, however it was started. ``pid`` is 0 until known.

    ``killer`` ends the process and its process group without ever signalling a
    bare pid that may have been reaped and reused: through a pidfd for a process
    we started, through the fork server (its reaper) for a forked one.
    """

    pid: int = 0
    code: int | None = None
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    #: Set once ``on_exit`` has been called for it.
    reported: asyncio.Event = field(default_factory=asyncio.Event)
    killer: Callable[[], None] | None = None
    #: The jail a spawned container runs in, or the cgroup of its limits a forked one was
    #: moved to (both ended once its exit is reported).
    jail: jailed.Jailed | None = None
    group: cgroups.Group | None = None

    def end(self, code: int | None) -> None:
        """Record that the process exited."""
        self.code = code
        self.exited.set()

    def out_of_memory(self) -> bool:
        """Whether the kernel killed it (or a process of it) at its memory limit."""
        group = self.group or (self.jail.group if self.jail is not None else None)
        return group is not None and group.oom_killed()

    def release(self) -> None:
        """End what its jail or cgroup left behind (it has exited)."""
        if self.jail is not None:
            self.jail.close()
        if self.group is not None:
            self.group.remove(0.5)
            self.group = None

    def kill(self) -> None:
        if self.killer is not None and not self.exited.is_set():
            self.killer()


class LocalBackend(Backend):
    """Runs each container as a process on this machine.

    Exit of a spawned container is seen through a pidfd on the event loop (a
    waiting thread where pidfds are missing), not asyncio's child watcher, whose
    threads race with other reapers and print warnings when the interpreter
    exits; a forked container's exit is reported by its fork server.
    """

    def __init__(self) -> None:
        self._children: dict[str, _Child] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._fork_servers: dict[Preload, asyncio.Task[ForkServer]] = {}
        self._images: ImageBuilder | None = None
        #: Every image built here, by its recipe's digest (what a launch names).
        self._built: dict[str, Environment] = {}
        self.bundle_cache = settings.bundle_cache()
        #: Carries jailed containers' connections to a control plane on TCP (a cluster's).
        self._control_relay: control_relay.Relay | None = None

    async def build_image(self, recipe: Recipe, log: BuildLog) -> Environment:
        if self._images is None:
            jail_builds = self.isolated and not isolation.problem()
            self._images = ImageBuilder(settings.image_cache(), jailed=jail_builds)
        built = await self._images.build(recipe, log)
        self._built[built.digest] = built
        return built

    def _image(self, digest: str) -> Environment | None:
        """The image a launch names by ``digest`` ("": none, this interpreter).

        Raises:
            OSError: no image of that digest was built here (a launch must follow
                its build, so this is a control plane's mistake, reported as a failed start).
        """
        if not digest:
            return None
        built = self._built.get(digest)
        if built is None:
            raise OSError(f"image {digest} was not built by this backend")
        return built

    async def prepare(self, preload: Preload) -> None:
        if settings.fork_server() and sys.platform == "linux":
            self._fork_server(preload)

    async def _bundle_root(self, digest: str) -> str:
        """Where bundle ``digest`` is unpacked on this machine (fetched first when it is not)."""
        root = bundle.find(self.bundle_cache, digest)
        if root is None:
            if self.fetch is None:
                raise OSError(f"code bundle {digest[:12]} is not here to preload")
            data = await self.fetch("bundle", digest)
            root = await asyncio.to_thread(bundle.install, self.bundle_cache, digest, data)
        return root

    async def _located(self, preload: Preload) -> Preload:
        """``preload`` with the paths of its bundle made absolute where its containers see
        it: where the bundle is unpacked on this machine, or, in a jail, where the jail
        holds it."""
        if not preload.bundle:
            return preload
        root = await self._bundle_root(preload.bundle)
        if self.isolated:
            root = bundle.folder(jailed.BUNDLES, preload.bundle)
        module_file, sys_path = locate(
            preload.module_kind, preload.module_file, preload.sys_path, root
        )
        return dataclasses.replace(preload, module_file=module_file, sys_path=sys_path, bundle="")

    async def _jail_maker(
        self,
        preload: Preload | None,
        image: Environment | None,
        volumes: dict[str, str],
        limits: cgroups.Limits | None = None,
    ) -> Callable[[dict[str, str]], isolation.Jail]:
        """What makes the jail of a container process running ``preload``'s code, given the
        process's environment (see :mod:`shoal.backends.jailed`).

        Raises:
            OSError: the control plane's address is not known yet, or the bundle cannot
                be had.
        """
        address = await self._jail_address()
        bundles: dict[str, str] = {}
        code_paths: list[str] = []
        code_files: list[str] = []
        if preload is not None and preload.bundle:
            bundles[preload.bundle] = await self._bundle_root(preload.bundle)
        elif preload is not None:  # the user's own files (the embedded server)
            code_paths += list(preload.sys_path)
            if preload.module_file:
                code_paths.append(os.path.dirname(preload.module_file))
                code_files.append(preload.module_file)
        code = (tuple(code_paths), tuple(code_files))
        return functools.partial(_container_jail, image, address, code, bundles, volumes, limits)

    async def _jail_address(self) -> str:
        """Where a jailed container reaches its control plane: the control plane's own Unix
        socket, or, to a control plane on TCP, a relay's, listening (backends/control_relay.py).

        Raises:
            OSError: the control plane's address is not known yet.
        """
        if not self.control_address:
            raise OSError("no control plane address yet: a jail cannot be made")
        if transport.parse(self.control_address)[0] == "unix":
            return self.control_address
        if self._control_relay is None:
            self._control_relay = control_relay.Relay()
        await self._control_relay.start()
        return self._control_relay.address

    async def _through_relay(self, launch: ContainerLaunch) -> ContainerLaunch:
        """``launch`` as a jailed container makes it: through the relay, when its control
        plane is on TCP (the relay then speaks TLS to it, as the container would have)."""
        if not self.isolated or transport.parse(launch.address)[0] == "unix":
            return launch
        address = await self._jail_address()
        assert self._control_relay is not None
        env = dict(launch.env)
        self._control_relay.target = (launch.address, env.pop("SHOAL_CONTROL_CERT", ""))
        return dataclasses.replace(launch, address=address, env=env)

    def _fork_server(self, preload: Preload) -> asyncio.Task[ForkServer]:
        task = self._fork_servers.get(preload)
        if task is None:

            async def start() -> ForkServer:
                located = await self._located(preload)
                image = self._image(preload.image)
                jail = await self._jail_maker(preload, image, {}) if self.isolated else None
                env = self._container_env()
                server = ForkServer(located, image, env, self.inherit_environment, jail)
                await server.start()
                return server

            task = asyncio.create_task(start())
            self._fork_servers[preload] = task
        return task

    async def start(self, launch: ContainerLaunch, on_exit: OnExit) -> int | None:
        launch = await self._through_relay(launch)
        server = None
        if launch.preload is not None and launch.preload in self._fork_servers:
            try:
                server = await self._fork_servers[launch.preload]
            except Exception:  # no fork server: start fresh interpreters instead
                server = None
        # Volumes are bound when a jail is made: a container with some gets its own.
        volumes = self.isolated and bool(launch.env.get("SHOAL_VOLUMES"))
        if server is not None and server.safe and not volumes:
            try:
                return await self._fork(server, launch, on_exit)
            except OSError:  # the server died since: fall through to a fresh interpreter
                pass
        return await self._spawn(launch, on_exit)

    def _container_env(self) -> dict[str, str]:
        """What this backend tells each of its containers about its machine."""
        return {"SHOAL_BUNDLE_CACHE": self.bundle_cache}

    async def _spawn(self, launch: ContainerLaunch, on_exit: OnExit) -> int:
        image = self._image(launch.image)
        base = base_environment(self.inherit_environment)
        env = {**base, **dict(image.env if image else ()), **self._container_env(), **launch.env}
        env["SHOAL_CONTAINER_TOKEN"] = launch.token
        env["PYTHONUNBUFFERED"] = "1"
        python = image.python if image else sys.executable
        argv = [python, "-m", "shoal.container", launch.address, launch.container_id]
        cwd = image.workdir if image else None
        jail: jailed.Jailed | None = None
        if self.isolated:
            volumes = json.loads(launch.env.get("SHOAL_VOLUMES") or "{}")
            limits = jailed.limits_of(launch.cpu_limit, launch.memory_limit, jailed.PIDS)
            make = await self._jail_maker(launch.preload, image, volumes, limits)
            jail = jailed.prepare(make(env), argv)
        proc = jailed.popen(
            jail,
            argv,
            cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        if jail is not None:
            try:
                await jail.attach()
            except BaseException:
                proc.kill()
                await asyncio.to_thread(proc.wait)
                jail.close()
                raise
        assert proc.stdout is not None and proc.stderr is not None
        child = _Child(proc.pid, jail=jail)
        try:  # our child, not yet reaped: the pidfd names this very process
            pidfd: int | None = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):  # not Linux >= 5.3: Popen checks before it signals
            pidfd = None
        child.killer = functools.partial(_kill_spawned, proc, pidfd)
        self._children[launch.container_id] = child
        self._own(_watch_exit(proc, pidfd, child))
        self._own(self._supervise(launch, child, proc.stdout, proc.stderr, on_exit))
        return proc.pid

    async def _fork(self, server: ForkServer, launch: ContainerLaunch, on_exit: OnExit) -> int:
        out_read, out_write = os.pipe()
        err_read, err_write = os.pipe()
        child = _Child()
        try:
            child.pid = await server.fork(launch, out_write, err_write, child.end)
            child.killer = functools.partial(server.kill, child.pid)
        except OSError:
            os.close(out_read)
            os.close(err_read)
            raise
        finally:
            os.close(out_write)
            os.close(err_write)
        if self.isolated and (launch.cpu_limit is not None or launch.memory_limit is not None):
            limits = jailed.limits_of(launch.cpu_limit, launch.memory_limit, jailed.PIDS)
            with contextlib.suppress(OSError):  # it exited already: its exit says so
                child.group = jailed.group_for(child.pid, limits)
        self._children[launch.container_id] = child
        stdout = os.fdopen(out_read, "rb", buffering=0)
        stderr = os.fdopen(err_read, "rb", buffering=0)
        self._own(self._supervise(launch, child, stdout, stderr, on_exit))
        return child.pid

    async def _supervise(
        self,
        launch: ContainerLaunch,
        child: _Child,
        stdout: IO[bytes],
        stderr: IO[bytes],
        on_exit: OnExit,
    ) -> None:
        relays = asyncio.gather(
            self._relay(stdout, launch, "stdout"), self._relay(stderr, launch, "stderr")
        )
        try:
            await child.exited.wait()
            # Let the last lines through, unless a grandchild still holds the pipes.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(relays), _DRAIN)
        finally:
            relays.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await relays
            self._children.pop(launch.container_id, None)
            if child.out_of_memory():
                limit = f"{launch.memory_limit} MiB" if launch.memory_limit else "its limit"
                line = f"shoal: killed: out of memory (over {limit})"
                self._write(launch, "stderr", [line.encode()])
            child.release()
        try:
            on_exit(launch.container_id, child.code)
        finally:
            child.reported.set()

    async def _relay(self, pipe: IO[bytes], launch: ContainerLaunch, which: str) -> None:
        """Copy ``pipe`` to our stdout or stderr, each line prefixed with the container's
        label, and to :attr:`on_output`; return at EOF."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=_CHUNK, loop=loop)
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader, loop=loop), pipe
        )
        pending = b""
        try:
            while chunk := await reader.read(_CHUNK):
                lines = (pending + chunk).split(b"\n")
                pending = lines.pop()
                self._write(launch, which, lines)
            if pending:
                self._write(launch, which, [pending])
        finally:
            transport.close()

    def _write(self, launch: ContainerLaunch, which: str, raw: list[bytes]) -> None:
        lines = [line.decode(errors="replace") for line in raw]
        _write(launch.label, launch.container_id, which, lines)
        if self.on_output is not None:
            self.on_output(launch.container_id, which, lines)

    def _own(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self, container_id: str, grace: float) -> None:
        """Returns once the process has exited and ``on_exit`` has been called for it."""
        child = self._children.get(container_id)
        if child is None:
            return
        if grace > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(child.exited.wait(), grace)
        child.kill()
        await child.reported.wait()

    def list(self) -> list[str]:
        return [cid for cid, child in self._children.items() if not child.exited.is_set()]

    def rss(self, container_id: str) -> int | None:
        child = self._children.get(container_id)
        if child is None or child.pid <= 0 or child.exited.is_set():
            return None
        try:
            with open(f"/proc/{child.pid}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) // 1024
        except OSError:
            return None
        return None

    def release(self, preload: Preload) -> None:
        """Stop the fork server of ``preload``; it kills the containers it forked (call it once
        every pool of ``preload`` has stopped)."""
        task = self._fork_servers.pop(preload, None)
        if task is None:
            return
        if task.done() and not task.cancelled() and task.exception() is None:
            task.result().close()
        else:
            task.cancel()

    async def close(self) -> None:
        await super().close()
        for task in self._fork_servers.values():
            if task.done() and not task.cancelled() and task.exception() is None:
                task.result().close()
            else:
                task.cancel()
        self._fork_servers.clear()
        if self._control_relay is not None:
            await self._control_relay.close()


def _container_jail(
    image: Environment | None,
    address: str,
    code: tuple[tuple[str, ...], tuple[str, ...]],
    bundles: dict[str, str],
    volumes: dict[str, str],
    limits: cgroups.Limits | None,
    env: dict[str, str],
) -> isolation.Jail:
    return jailed.container_jail(
        image=image,
        address=address,
        env=env,
        code_paths=code[0],
        code_files=code[1],
        bundles=bundles,
        volumes=volumes,
        gpus=True,
        limits=limits,
    )


def _kill_spawned(proc: subprocess.Popen[bytes], pidfd: int | None) -> None:
    """SIGKILL a container we started, through its pidfd (a no-op once it has exited)."""
    with contextlib.suppress(ProcessLookupError, OSError):
        if pidfd is not None:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        else:
            proc.kill()


def _end_group(pid: int) -> None:
    """SIGKILL the process group of container ``pid``, which has exited and is not yet
    reaped, so neither its pid nor its group's id can have been reused."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


async def _watch_exit(proc: subprocess.Popen[bytes], fd: int | None, child: _Child) -> None:
    """Wait for ``proc`` to exit without blocking the loop; end its process group (what
    the user's code started), then reap it and record its code."""
    if fd is None:  # not Linux >= 5.3
        child.end(await asyncio.to_thread(proc.wait))
        return
    loop = asyncio.get_running_loop()
    exited: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not exited.done():
            exited.set_result(None)

    loop.add_reader(fd, readable)
    try:
        await exited
    finally:
        loop.remove_reader(fd)
        if exited.cancelled():  # the loop is going away: give up on it
            child.killer = None
            os.close(fd)
    _end_group(proc.pid)
    child.end(proc.wait())
    child.killer = None
    os.close(fd)


def _write(label: str, container_id: str, which: str, lines: list[str]) -> None:
    # Looked up per write: a live terminal display may have replaced sys.stdout.
    out: TextIO = sys.stdout if which == "stdout" else sys.stderr
    text = relayed(label, container_id, which, *unmarked(lines))
    with contextlib.suppress(ValueError, OSError):  # closed at interpreter exit
        out.write(text)
        out.flush()
