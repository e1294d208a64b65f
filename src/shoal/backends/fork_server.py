"""A warm process that forks local containers: the fork server, and its client.

Starting a container as a fresh interpreter costs the interpreter's start plus
importing Shoal and the user's module (tens of milliseconds or, with a heavy
module, seconds). The fork server pays that once: it is started when a pool
starts, imports Shoal's container runtime and the user's module, and then forks
a container on request in a few milliseconds. The child runs the same container
runtime as ``python -m shoal.container``.

Forking is unsafe once a process has threads (native ones too: PyTorch starts a
pool when imported) or an initialised CUDA context; the server checks after
importing the user's module and, when unsafe, says so, and the backend starts
containers as fresh interpreters instead. ``SHOAL_FORK_SERVER=0``
turns the server off.

The client (:class:`ForkServer`, in the control plane's process) and the server
(:func:`serve`, ``python -m shoal.backends.fork_server FD``) speak JSON messages
over a ``SOCK_SEQPACKET`` socket pair; a fork request carries the child's stdout
and stderr pipes as file descriptors. Nothing on it is unpickled. The server
reaps its children and reports their exit codes; when the client's end closes
(the control plane exited or died), it kills every child and exits. Killing goes
through the server too (a ``kill`` request), since only the process that reaps a
child can signal it without racing the reuse of its pid; each child's whole
process group goes with it, so processes the user's code started do not outlive
their container.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import IO, Any, Final, NoReturn

from shoal import log
from shoal.backends import jailed
from shoal.backends.base import ContainerLaunch, Preload, base_environment
from shoal.backends.isolation import Jail
from shoal.spec.image import Environment

#: Largest JSON message either side sends.
_MESSAGE: Final = 64 * 1024


class ForkServer:
    """The control plane's handle on one fork server process (one per preload)."""

    def __init__(
        self,
        preload: Preload,
        image: Environment | None = None,
        env: dict[str, str] | None = None,
        inherit_environment: bool = True,
        jail: Callable[[dict[str, str]], Jail] | None = None,
    ) -> None:
        """``preload``'s paths are this machine's (or its jail's); ``image`` is the
        environment it names (None: this interpreter); ``env`` goes to every container on
        top of the image's. ``jail`` makes the jail the server runs in, given its
        environment (None: not isolated); its containers are born inside it."""
        self.preload = preload
        self._image = image
        self._env = env or {}
        self._inherit = inherit_environment
        self._make_jail = jail
        self._jailed: jailed.Jailed | None = None
        #: A jailed server's children by their pids here, as pids of its namespace.
        self._inner: dict[int, int] = {}
        self.safe = False
        self.why_unsafe = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._ready: asyncio.Future[None] | None = None
        self._forks: dict[str, asyncio.Future[int]] = {}
        self._on_exit: dict[int, Callable[[int | None], None]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        """Start the server and return once it has imported the user's module."""
        loop = self._loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        image = self._image
        env = {**base_environment(self._inherit), **dict(image.env if image else ()), **self._env}
        env["PYTHONUNBUFFERED"] = "1"
        python = image.python if image else sys.executable
        argv = [python, "-m", "shoal.backends.fork_server", str(theirs.fileno())]
        cwd = image.workdir if image else None
        if self._make_jail is not None:
            self._jailed = jailed.prepare(self._make_jail(env), argv)
        try:
            self._proc = jailed.popen(
                self._jailed,
                argv,
                cwd,
                [theirs.fileno()],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                start_new_session=True,
            )
        finally:
            theirs.close()
        # What it prints (the user's module, imported ahead) or its jail says (bubblewrap,
        # on a failed start) goes to the server's log as entries of its own (JSON with
        # SHOAL_LOG_FORMAT=json), never as raw lines; its containers have pipes of their own.
        for pipe, level in ((self._proc.stdout, "info"), (self._proc.stderr, "warning")):
            assert pipe is not None
            threading.Thread(target=_relay, args=(pipe, level), daemon=True).start()
        ours.setblocking(False)
        self._sock = ours
        self._ready = loop.create_future()
        loop.add_reader(ours.fileno(), self._on_readable)
        try:
            fields = ("module_kind", "module_name", "module_file", "sys_path")
            message = {"op": "preload", **{name: getattr(self.preload, name) for name in fields}}
            message["pidfds"] = self._jailed is not None
            ours.send(json.dumps(message).encode())
            if self._jailed is not None:  # its network joins out while it imports
                await self._jailed.attach()
            await self._ready
        except BaseException:  # cancelled while it imports: do not leave it behind
            self.close()
            raise

    async def fork(
        self,
        launch: ContainerLaunch,
        stdout: int,
        stderr: int,
        on_exit: Callable[[int | None], None],
    ) -> int:
        """Fork a container writing to the ``stdout``/``stderr`` pipe ends; return its pid.

        Raises:
            OSError: the server is gone.
        """
        if self._sock is None or self._loop is None:
            raise OSError("the fork server is not running")
        reply: asyncio.Future[int] = self._loop.create_future()
        self._forks[launch.container_id] = reply
        request = {
            "op": "fork",
            "container_id": launch.container_id,
            "address": launch.address,
            "token": launch.token,
            "env": launch.env,
        }
        socket.send_fds(self._sock, [json.dumps(request).encode()], [stdout, stderr])
        pid = await reply
        self._on_exit[self._inner.get(pid, pid)] = on_exit
        return pid

    def kill(self, pid: int) -> None:
        """Kill forked container ``pid`` and its process group, unless it already exited.

        The server does it: it is the process that reaps its children, so it never
        signals a pid it has already reaped (and the system may have reused).
        """
        if self._sock is not None:
            message = {"op": "kill", "pid": self._inner.get(pid, pid)}
            with contextlib.suppress(OSError):
                self._sock.send(json.dumps(message).encode())

    def _on_readable(self) -> None:
        assert self._sock is not None
        try:
            data, fds, _, _ = socket.recv_fds(self._sock, _MESSAGE, 1)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data, fds = b"", []
        host_pid = None
        for fd in fds:  # a jailed server's child, as a pidfd: its pid here
            with contextlib.suppress(OSError):
                host_pid = jailed.host_pid(fd)
            os.close(fd)
        if not data:
            self._lost()
            return
        message = json.loads(data)
        op = message["op"]
        if op == "ready":
            self.safe, self.why_unsafe = message["safe"], message["why"]
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(None)
        elif op == "forked":
            pid = message["pid"]
            if host_pid is not None:
                self._inner[host_pid] = pid
                pid = host_pid
            reply = self._forks.pop(message["container_id"], None)
            if reply is not None and not reply.done():
                reply.set_result(pid)
        elif op == "exited":
            callback = self._on_exit.pop(message["pid"], None)
            self._inner = {h: i for h, i in self._inner.items() if i != message["pid"]}
            if callback is not None:
                callback(message["code"])

    def _lost(self) -> None:
        """The server is gone: its children were killed with it; say so for each."""
        error = OSError("the fork server exited")
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(error)
        for reply in self._forks.values():
            if not reply.done():
                reply.set_exception(error)
        self._forks.clear()
        self.close()

    def close(self) -> None:
        """Close the connection: the server kills its children and exits. Children whose
        exit was not reported yet are reported ended now (with no code), since no report
        will come."""
        if self._sock is not None and self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        if self._proc is not None:
            proc, self._proc = self._proc, None
            jail, self._jailed = self._jailed, None
            # Reap it off the loop; then end what its jail left (network, cgroup, folder).
            threading.Thread(target=_reap_server, args=(proc, jail), daemon=True).start()
        callbacks, self._on_exit = self._on_exit, {}
        for callback in callbacks.values():
            callback(None)


def _relay(pipe: IO[bytes], level: str) -> None:
    """Put each line a fork server writes to ``pipe`` in the server's log, until EOF."""
    with pipe:
        for raw in pipe:
            line = raw.decode(errors="replace").rstrip("\n")
            log.say(f"fork server: {line}", component="fork-server", level=level)


def _reap_server(proc: subprocess.Popen[bytes], jail: jailed.Jailed | None) -> None:
    proc.wait()
    if jail is not None:
        jail.close()


# -- the server process ---------------------------------------------------------


def _threads() -> int:
    """Threads of this process, native ones included (an OpenMP pool is invisible to
    ``threading``, and a child forked beside one can deadlock in its first parallel op)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def _fork_safety() -> tuple[bool, str]:
    threads = _threads()
    if threads > 1:
        return False, f"the process has {threads} threads after importing the user's module"
    torch: Any = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        return False, "CUDA is initialised"
    return True, ""


def _preload(message: dict[str, Any]) -> None:
    """Import the container runtime and the user's module; errors are the children's to report."""
    import shoal.container.__main__  # noqa: F401 - the runtime and its dependencies
    from shoal import context
    from shoal.container.user_code import load_module

    context.mark_container()
    if message["module_kind"] == "serialized":
        return
    try:
        load_module(
            message["module_kind"],
            message["module_name"],
            message["module_file"],
            message["sys_path"],
        )
    except BaseException:
        pass


def _child(
    control: socket.socket, wakeup: tuple[int, int], request: dict[str, Any], fds: list[int]
) -> NoReturn:
    """Become container ``request["container_id"]``; never returns."""
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        control.close()
        for fd in wakeup:
            os.close(fd)
        os.setsid()
        os.dup2(fds[0], 1)
        os.dup2(fds[1], 2)
        for fd in fds:
            os.close(fd)
        os.environ.update(request.get("env", {}))
        os.environ["SHOAL_CONTAINER_TOKEN"] = request["token"]
        from shoal.container.__main__ import run

        run(request["address"], request["container_id"])
    finally:
        os._exit(1)


def _end_group(pid: int) -> None:
    """SIGKILL container ``pid``'s process group: the container and what its code started.

    Only called for a child not yet reaped: until it is, its pid (and so its
    process group's id) cannot be reused, and the signal reaches the right processes.
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _reap(control: socket.socket, children: set[int]) -> None:
    """Reap every exited child; end its process group first (see :func:`_end_group`)."""
    while children:
        try:  # look without reaping, so the pid stays ours while its group is ended
            found = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return
        if found is None or found.si_pid == 0:
            return
        pid = found.si_pid
        if pid in children:
            _end_group(pid)
        _, status = os.waitpid(pid, 0)
        children.discard(pid)
        message = {"op": "exited", "pid": pid, "code": os.waitstatus_to_exitcode(status)}
        control.send(json.dumps(message).encode())


def _serve_one(
    control: socket.socket, wakeup: tuple[int, int], children: set[int], pidfds: bool
) -> bool:
    """Serve one request (fork or kill); ``False`` once the client has gone. With
    ``pidfds`` (a jailed server, whose pids mean nothing outside its namespace) each
    reply carries the child as a pidfd, from which the client reads its pid."""
    data, fds, _, _ = socket.recv_fds(control, _MESSAGE, 2)
    if not data:
        return False
    request = json.loads(data)
    if request["op"] == "kill":
        if request["pid"] in children:  # not reaped yet: the pid is still this child's
            _end_group(request["pid"])
        return True
    pid = os.fork()
    if pid == 0:
        _child(control, wakeup, request, fds)
    for passed in fds:
        os.close(passed)
    children.add(pid)
    reply = json.dumps({"op": "forked", "container_id": request["container_id"], "pid": pid})
    if pidfds:
        pidfd = os.pidfd_open(pid)  # not reaped yet: it names this child
        try:
            socket.send_fds(control, [reply.encode()], [pidfd])
        finally:
            os.close(pidfd)
    else:
        control.send(reply.encode())
    return True


def _drain(fd: int) -> None:
    with contextlib.suppress(BlockingIOError):
        while os.read(fd, 512):
            pass


def serve(fd: int) -> None:
    """The fork server's main loop (see the module docstring)."""
    control = socket.socket(fileno=fd)
    request = control.recv(_MESSAGE)
    if not request:
        return  # the control plane is gone already (its run ended)
    message = json.loads(request)
    pidfds = bool(message.get("pidfds"))
    _preload(message)
    safe, why = _fork_safety()
    control.send(json.dumps({"op": "ready", "safe": safe, "why": why}).encode())
    if not safe:
        return  # nothing to fork: free the memory the imports took
    wakeup = os.pipe()
    os.set_blocking(wakeup[0], False)
    os.set_blocking(wakeup[1], False)
    signal.set_wakeup_fd(wakeup[1])
    signal.signal(signal.SIGCHLD, lambda *_: None)
    children: set[int] = set()
    selector = selectors.DefaultSelector()
    selector.register(control, selectors.EVENT_READ)
    selector.register(wakeup[0], selectors.EVENT_READ)
    try:
        while True:
            for key, _ in selector.select():
                if key.fileobj is control:
                    if not _serve_one(control, wakeup, children, pidfds):
                        return
                else:
                    _drain(wakeup[0])  # SIGCHLD: reaped below
                _reap(control, children)
    finally:
        for pid in children:  # none reaped yet (see _end_group)
            _end_group(pid)


def main(fd: int) -> None:
    """``python -m shoal.backends.fork_server FD``: serve until the control plane goes.

    A control plane that ends before the server is ready (a run shorter than the
    user's imports) closes its end early; that is a normal end, not an error.
    """
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        serve(fd)


if __name__ == "__main__":
    main(int(sys.argv[1]))
