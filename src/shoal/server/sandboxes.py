"""Sandboxes: commands of code the server's users did not write, each in its own jail.

A sandbox (Modal's ``Sandbox``) is a process tree isolated with bubblewrap
(:mod:`shoal.backends.isolation`: its own namespaces, a read-only root of the host's
``/usr``, private size-capped ``/tmp`` and working directory, no capabilities, a
seccomp filter, rlimits and cgroup limits). Inside it runs the sandbox agent
(:mod:`shoal.backends.sandbox_agent`), which starts the sandbox's own command (if
any) and every ``exec``, and does its file operations, all in the sandbox's namespaces.
The server talks to the agent over a Unix socket in a folder of that sandbox alone: it
sends ``marshal``-ed requests, and reads JSON frames (bounded, checked field by field);
nothing the sandbox sends is unpickled or unmarshalled.

What a command writes is kept here, per stream, until its reader takes it: at most
SHOAL_SANDBOX_BUFFER bytes (default 8 MiB) unread per stream. Past that, output is
dropped, not held: the command never blocks on a reader that does not read, and the
reader finds one line ``[shoal: N bytes of output dropped]`` where the gap is.

A sandbox ends when its own command exits (its exit code), when it is terminated
(137), when its timeout passes (124), or when what runs inside kills the agent (137).
Then everything left in it is killed, its cgroups and folder are removed, and it stays
listed, ended, for a while. It belongs to its app: stopping the app terminates it; a
client going away does not.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import collections
import contextlib
import functools
import itertools
import json
import marshal
import os
import py_compile
import secrets
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shoal import settings
from shoal.backends import cgroups, image_jail, isolation, netstack, seccomp
from shoal.backends.image_build import ImageBuilder
from shoal.exception import ExecutionError, InvalidError, NotFoundError
from shoal.spec.image import Environment, Recipe, Step

#: Exit codes, as Modal's: a sandbox (or exec) ended by its timeout, or terminated.
TIMEOUT_CODE = 124
TERMINATED_CODE = 137
#: An exec's code when its own timeout ended it (Modal's).
EXEC_TIMEOUT_CODE = -1
#: Largest frame the agent may send.
_MAX_FRAME = 8 * 1024 * 1024
#: Seconds the agent has to connect once the sandbox is started.
_AGENT_TIMEOUT = 10.0
#: Where a sandbox's commands are looked for: ``python`` first (the server's interpreter,
#: bound read-only for the agent: a sandbox runs Python as Modal's default image does),
#: then the host's ``/usr``.
_PATH = "/.shoal/agent/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: Jails tried before a sandbox's start is given up (see Sandboxes.create).
_START_ATTEMPTS = 3
#: Ended sandboxes kept listed.
_KEEP_ENDED = 1000

_AGENT = os.path.join(os.path.dirname(isolation.__file__), "sandbox_agent.py")


@functools.cache
def _agent_code() -> str:
    """The agent compiled for this interpreter, once per process (a script is compiled
    at every start; its bytecode starts some 5 ms sooner): the folder holding it."""
    folder = tempfile.mkdtemp(prefix="shoal-agent-")
    py_compile.compile(
        _AGENT,
        cfile=os.path.join(folder, "agent.pyc"),
        doraise=True,
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
    )
    bin_dir = os.path.join(folder, "bin")  # `python` inside, as Modal's default image has
    os.mkdir(bin_dir)
    for name in ("python", "python3"):
        os.symlink(_interpreter(), os.path.join(bin_dir, name))
    atexit.register(shutil.rmtree, folder, True)
    return folder


def _interpreter() -> str:
    """The server's own base interpreter (not a virtual environment's link to it)."""
    python = os.path.join(sys.base_prefix, "bin", os.path.basename(sys.executable))
    return python if os.path.exists(python) else os.path.realpath(sys.executable)


def buffer_bytes() -> int:
    return max(64 * 1024, int(os.environ.get("SHOAL_SANDBOX_BUFFER", str(8 * 1024 * 1024))))


class Stream:
    """What one stream of one command wrote and its reader has not taken yet."""

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self.data = bytearray()
        #: The offset (from the stream's start) of data[0].
        self.base = 0
        self.eof = False
        self.dropped = 0
        self.changed = asyncio.Event()

    def add(self, chunk: bytes) -> None:
        room = self._cap - len(self.data)
        if len(chunk) > room:
            if self.dropped == 0 and room > 0:
                self.data += chunk[:room]
            self.dropped += len(chunk) - max(room, 0)
        else:
            self._note_gap()
            self.data += chunk
        self.changed.set()

    def _note_gap(self) -> None:
        if self.dropped:
            self.data += f"\n[shoal: {self.dropped} bytes of output dropped]\n".encode()
            self.dropped = 0

    def end(self) -> None:
        self._note_gap()
        self.eof = True
        self.changed.set()

    async def read(self, offset: int, wait: float, limit: int) -> dict[str, Any]:
        """What it has from ``offset`` (at most ``limit`` bytes), waiting up to ``wait``
        seconds for something; ``eof`` once there is nothing more to come."""
        chunk, after = self.take(offset, limit)
        if not chunk and not self.eof and wait > 0:
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), wait)
            chunk, after = self.take(offset, limit)
        return {
            "data": chunk,
            "offset": after,
            "eof": self.eof and after >= self.base + len(self.data),
        }

    def take(self, offset: int, limit: int) -> tuple[bytes, int]:
        """Bytes from ``offset`` (what is before it is freed), at most ``limit``, and the
        offset after them."""
        if offset > self.base:
            del self.data[: offset - self.base]
            self.base = offset
        chunk = bytes(self.data[:limit])
        return chunk, self.base + len(chunk)


class Log:
    """The last :data:`LOG_LINES` lines a sandbox's own command wrote, by stream."""

    def __init__(self) -> None:
        self.lines: collections.deque[tuple[float, str, str]] = collections.deque(maxlen=LOG_LINES)
        self._partial = {1: b"", 2: b""}

    def add(self, fd: int, data: bytes) -> None:
        held = self._partial.get(fd, b"") + data
        *whole, rest = held.split(b"\n")
        self._partial[fd] = rest[-65536:]  # a line without end is kept to 64 KiB
        now = time.time()
        which = "stdout" if fd == 1 else "stderr"
        for line in whole:
            self.lines.append((now, which, line.decode(errors="replace")))


class Watch:
    """The changes one ``filesystem.watch`` saw and its reader has not taken yet (at most
    :data:`WATCH_EVENTS`; the oldest go first, counted)."""

    def __init__(self) -> None:
        self.events: collections.deque[dict[str, Any]] = collections.deque(maxlen=WATCH_EVENTS)
        #: The number (from the watch's start) of events[0].
        self.base = 0
        self.ended = False
        self.changed = asyncio.Event()

    def add(self, kind: str, paths: list[str]) -> None:
        if len(self.events) == self.events.maxlen:
            self.base += 1  # the oldest is dropped
        self.events.append({"kind": kind, "paths": paths})
        self.changed.set()

    def end(self) -> None:
        self.ended = True
        self.changed.set()

    async def read(self, offset: int, wait: float) -> dict[str, Any]:
        """The events from number ``offset`` on (waiting up to ``wait`` seconds for one)."""
        if offset >= self.base + len(self.events) and not self.ended and wait > 0:
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), wait)
        skip = max(0, offset - self.base)
        found = list(self.events)[skip:]
        return {"events": found, "offset": self.base + skip + len(found), "ended": self.ended}


#: Events a watch keeps for its reader.
WATCH_EVENTS = 10_000
#: What a change is reported as (inotify's bits, grouped as Modal groups them).
WATCH_KINDS = frozenset(("Access", "Create", "Modify", "Remove"))

#: The prefix of each sandbox's own folder (its agent's socket, its snapshot), before
#: its server's pid.
PRIVATE = "shoal-sb-"

#: Lines of a sandbox's own command kept for ``shoal sandbox logs``.
LOG_LINES = 1000


@dataclass
class Command:
    """One command running in a sandbox (its own, 0, or an exec)."""

    proc: int
    streams: dict[int, Stream]
    code: int | None = None
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    timer: asyncio.TimerHandle | None = None
    timed_out: bool = False


@dataclass(frozen=True, slots=True)
class SandboxSpec:
    """What a sandbox is created with (checked by the server's op)."""

    app: str
    command: tuple[str, ...] = ()
    timeout: float = 300.0
    workdir: str = "/root"
    env: tuple[tuple[str, str], ...] = ()
    block_network: bool = False
    name: str = ""
    tags: tuple[tuple[str, str], ...] = ()
    limits: cgroups.Limits = field(default_factory=cgroups.Limits)
    #: The built image it runs in (None: the host's /usr and the server's Python).
    image: Environment | None = None
    #: The recipe of that image (None: none), which a snapshot extends.
    recipe: Recipe | None = None
    #: Seconds without use after which it ends (None: never; see Sandbox._watch_idle).
    idle_timeout: float | None = None
    #: Its volumes: (path inside, host folder, read-only), the folders found by the server.
    volumes: tuple[tuple[str, str, bool], ...] = ()
    #: The only networks it may send to (None: any; see netstack.restrict).
    cidr_allowlist: tuple[str, ...] | None = None
    #: Its own command runs on a pseudo-terminal (its output all on stdout).
    pty: bool = False
    #: Ports it serves on, each forwarded from the host: (port, encrypted).
    ports: tuple[tuple[int, bool], ...] = ()


class Sandbox:
    """One sandbox on this server (see the module docstring)."""

    def __init__(self, spec: SandboxSpec, groups: cgroups.Pool | None = None) -> None:
        self.spec = spec
        self._groups = groups
        self.object_id = "sb-" + secrets.token_hex(8)
        self.tags = dict(spec.tags)
        self.created = time.time()
        self.returncode: int | None = None
        #: Why it ended: "exited", "terminated", "timeout", "oom" or "agent lost".
        self.reason = ""
        self.ended = asyncio.Event()
        self.commands: dict[int, Command] = {}
        self._next_proc = itertools.count(1)
        self._next_request = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._private = ""
        self._group: cgroups.Group | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._deadline: asyncio.TimerHandle | None = None
        self._cap = buffer_bytes()
        self._last_active = 0.0
        #: The last lines its own command wrote, for ``shoal sandbox logs`` (what its
        #: streams' reader takes does not take these).
        self.log = Log()
        self._link: netstack.Link | None = None
        #: Its declared ports: the host loopback port each is forwarded to, and whether
        #: it is encrypted (reached through the gateway, behind the token).
        self.tunnels: dict[int, tuple[int, bool]] = {}
        #: Called once it ends.
        self.ended_callbacks: list[Callable[[], None]] = []
        #: Its file watches, by number.
        self.watches: dict[int, Watch] = {}
        self._next_watch = itertools.count(1)

    # -- starting ---------------------------------------------------------------

    async def start(self) -> None:
        """Start the jail and its agent; return once the agent is connected.

        Raises:
            OSError: it could not start (bubblewrap failed, or the agent never came).
        """
        self._private = isolation.private_folder(PRIVATE)
        os.chmod(self._private, 0o700)
        run = os.path.join(self._private, "run")
        os.mkdir(run)
        restore = _restored(self.spec.recipe)
        if restore:  # a snapshot it starts from: its agent unpacks it first
            await asyncio.to_thread(_write_file, os.path.join(run, "restore.tar"), restore)
        socket_path = os.path.join(run, "agent.sock")
        connected: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]]
        connected = asyncio.get_running_loop().create_future()

        def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if connected.done():
                writer.close()  # one agent only
            else:
                connected.set_result((reader, writer))

        listener = await asyncio.start_unix_server(accept, socket_path, limit=_MAX_FRAME + 4)
        try:
            if cgroups.version():
                groups = self._groups or cgroups.Pool(keep=0)
                self._group = groups.take(self.spec.limits)
            outbound = not self.spec.block_network and not netstack.problem()
            info_read, info_write = os.pipe() if outbound else (-1, -1)
            given, line = self._command_line(run, info_write if outbound else None)
            passed = (*given, info_write) if outbound else given
            try:
                self._process = await asyncio.create_subprocess_exec(
                    *line,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    pass_fds=passed,
                    start_new_session=True,
                )
            finally:
                for fd in passed:
                    os.close(fd)
            # Its network is joined out while its agent starts: the two overlap.
            network = asyncio.ensure_future(
                self._attach_network(info_read) if outbound else _ready()
            )
            exited: asyncio.Future[Any] = asyncio.ensure_future(self._process.wait())
            either: set[asyncio.Future[Any]] = {connected, exited}
            done, _ = await asyncio.wait(
                either, timeout=_AGENT_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
            )
            exited.cancel()
            if connected not in done:
                network.cancel()
                why = await self._stderr()
                raise OSError(f"the sandbox did not start: {why or 'its agent never connected'}")
            await network
        except BaseException:
            listener.close()
            await self._cleanup()
            raise
        listener.close()
        reader, self._writer = connected.result()
        if self.spec.command:
            self.commands[0] = Command(0, {1: Stream(self._cap), 2: Stream(self._cap)})
        self._own(self._read(reader))
        self._own(self._watch())
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(self.spec.timeout, self._timed_out)
        if self.spec.idle_timeout is not None:
            self._active()
            self._own(self._watch_idle(self.spec.idle_timeout))

    async def _attach_network(self, info: int) -> None:
        """Join the jail's network namespace to the outside (see netstack), once bubblewrap
        has said, on ``info``, which process holds it.

        Raises:
            OSError: the jail ended first, or the network stack failed (what it said).
        """
        pid = await isolation.jail_pid(info, "the sandbox")
        if self.spec.cidr_allowlist is not None:  # before the interface exists: airtight
            await netstack.restrict(pid, netstack.networks(list(self.spec.cidr_allowlist)))
        api = os.path.join(self._private, "net.sock") if self.spec.ports else None
        self._link = await netstack.attach(pid, api)
        for port, encrypted in self.spec.ports:  # outside the jail: its code cannot add one
            assert api is not None
            self.tunnels[port] = (await netstack.forward(api, port), encrypted)

    def _command_line(self, run: str, info: int | None) -> tuple[tuple[int, ...], list[str]]:
        """What bwrap inherits (the seccomp filter in a pipe's read end; the user
        namespace of an image with users) and the command line that starts the jail with
        the agent in it (bwrap writes its first pid to ``info``, when given, for the
        network to be joined)."""
        image = self.spec.image
        ro = [*isolation.interpreter_binds(), (_agent_code(), "/.shoal/agent")]
        path, env = _PATH, dict(image.env) if image is not None else {}
        if image is not None:  # its environment, read-only where it is built; first on PATH
            root = os.path.dirname(os.path.dirname(image.python))
            base = os.path.dirname(os.path.dirname(os.path.realpath(image.python)))
            ro += [(root, root), (base, base)] if base != sys.base_prefix else [(root, root)]
            path = f"{os.path.dirname(image.python)}:{_PATH}"
        env.update({"PATH": path, "HOME": "/root"})
        env.update(dict(self.spec.env))
        rw = [(run, "/.shoal/run")]
        accounts = image.accounts if image is not None else None
        tmpfs: tuple[str, ...] = ()
        if accounts is not None:  # the folders its build made (/srv...) and its users' homes
            fs = os.path.dirname(accounts)
            ro += [*image_jail.tree(fs), (os.path.join(fs, "home"), "/.shoal/home")]
            tmpfs = ("/home",)  # where the agent copies them (see sandbox_agent._homes)
        for inside, host, read_only in self.spec.volumes:
            (ro if read_only else rw).append((host, inside))
        users = accounts is not None and isolation.has_users(accounts)
        users = users and not isolation.users_problem()
        jail = isolation.Jail(
            ro=tuple(ro),
            hidden=isolation.interpreter_hidden(),
            rw=tuple(rw),
            workdir=self.spec.workdir,
            network=info is not None,
            hostname="sandbox",
            env=tuple(env.items()),
            accounts=accounts,
            users=users,
            tmpfs=tmpfs,
        )
        argv = [
            _interpreter(),
            "-I",
            "-S",
            "/.shoal/agent/agent.pyc",
            "/.shoal/run/agent.sock",
        ]
        argv += ["pty" if self.spec.pty else "pipes", *self.spec.command]
        read_end, write_end = os.pipe()
        os.write(write_end, seccomp.program())  # under a kilobyte: the pipe holds it
        os.close(write_end)
        userns = isolation.user_namespace() if users else None
        group = self._group
        line = isolation.command(jail, argv, self._private, read_end, group, info, userns)
        return (read_end,) if userns is None else (read_end, userns), line

    async def _stderr(self) -> str:
        if self._process is None or self._process.stderr is None:
            return ""
        with contextlib.suppress(TimeoutError):
            data = await asyncio.wait_for(self._process.stderr.read(4096), 1.0)
            return data.decode(errors="replace").strip()
        return ""

    def _own(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the agent's side ------------------------------------------------------------

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                head = await reader.readexactly(4)
                (length,) = struct.unpack(">I", head)
                if length > _MAX_FRAME:
                    break
                message = json.loads(await reader.readexactly(length))
                if not isinstance(message, dict):
                    break
                self._hear(message)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, KeyError, TypeError):
            pass
        self._finish(TERMINATED_CODE, "agent lost")

    def _hear(self, message: dict[str, Any]) -> None:
        op = message.get("op")
        if op in ("out", "eof"):
            self._heard_output(message, op == "eof")
        elif op == "exit":
            command = self.commands.get(message["proc"])
            if command is not None and command.code is None:
                code = int(message["code"])
                if command.timer is not None:
                    command.timer.cancel()
                command.code = EXEC_TIMEOUT_CODE if command.timed_out else _modal_code(code)
                command.exited.set()
                if command.proc == 0:
                    reason = "oom" if self._oom() else "exited"
                    self._finish(command.code, reason)
        elif op == "fsevent":
            number, kind, paths = message.get("watch"), message.get("kind"), message.get("paths")
            watch = self.watches.get(number) if isinstance(number, int) else None
            if watch is not None and kind in WATCH_KINDS and isinstance(paths, list):
                watch.add(str(kind), [str(p) for p in paths])
        elif op in ("started", "done", "error"):
            ident = message.get("id")
            future = self._pending.pop(ident, None) if isinstance(ident, int) else None
            if future is not None and not future.done():
                future.set_result(message)
            elif ident == 0 and op == "error":  # its own command could not start
                self._finish(127, "exited")

    def _heard_output(self, message: dict[str, Any], end: bool) -> None:
        """A command wrote to one of its streams (``end``: closed it)."""
        command = self.commands.get(message["proc"])
        stream = command.streams.get(message["fd"]) if command else None
        if stream is None or command is None:
            return
        if end:
            stream.end()
            return
        data = base64.b64decode(message["data"])
        stream.add(data)
        if command.proc == 0:
            self.log.add(message["fd"], data)

    @property
    def group(self) -> cgroups.Group | None:
        """Its cgroups while it runs (None where no hierarchy is writable)."""
        return self._group

    def _oom(self) -> bool:
        return self._group is not None and self._group.oom_killed()

    async def _watch(self) -> None:
        """The jail's process ended (its agent and everything): the sandbox has."""
        assert self._process is not None
        await self._process.wait()
        self._finish(TERMINATED_CODE, "oom" if self._oom() else "agent lost")

    def _send(self, message: dict[str, Any]) -> None:
        if self._writer is None or self._writer.is_closing():
            raise InvalidError(f"sandbox {self.object_id} has ended")
        data = marshal.dumps(message)  # to the agent, which trusts its server
        self._writer.write(struct.pack(">I", len(data)) + data)

    async def _ask(self, message: dict[str, Any]) -> dict[str, Any]:
        ident = next(self._next_request)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        self._send({**message, "id": ident})
        ended: asyncio.Future[Any] = asyncio.ensure_future(self.ended.wait())
        either: set[asyncio.Future[Any]] = {future, ended}
        try:
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ended.cancel()
        if not future.done():
            self._pending.pop(ident, None)
            raise InvalidError(f"sandbox {self.object_id} has ended")
        answer = future.result()
        if answer.get("op") == "error":
            raise _agent_error(answer)
        return answer

    # -- commands ------------------------------------------------------------------------

    async def exec(
        self,
        argv: list[str],
        workdir: str | None,
        env: dict[str, str],
        limit: float | None,
        pty: bool = False,
    ) -> int:
        """Start ``argv`` in the sandbox (``pty``: on a pseudo-terminal); its command
        number. ``limit``: seconds after which it is killed (its code then: -1)."""
        if self.ended.is_set():
            raise InvalidError(f"sandbox {self.object_id} has ended")
        self._active()
        proc = next(self._next_proc)
        command = self.commands[proc] = Command(proc, {1: Stream(self._cap), 2: Stream(self._cap)})
        try:
            request = {"op": "exec", "proc": proc, "argv": argv, "cwd": workdir, "env": env}
            await self._ask({**request, "pty": pty})
        except BaseException:
            self.commands.pop(proc, None)
            raise
        if limit is not None:
            loop = asyncio.get_running_loop()
            command.timer = loop.call_later(limit, self._exec_timed_out, command)
        return proc

    def _exec_timed_out(self, command: Command) -> None:
        if command.code is None:
            command.timed_out = True
            self.signal(command.proc, signal.SIGKILL)

    def command(self, proc: int) -> Command:
        found = self.commands.get(proc)
        if found is None:
            raise NotFoundError(f"no process {proc} in sandbox {self.object_id}")
        return found

    async def read(
        self, proc: int, fd: int, offset: int, wait: float, limit: int
    ) -> dict[str, Any]:
        """What stream ``fd`` of ``proc`` has from ``offset``, waiting up to ``wait``
        seconds for something; ``eof`` once there is nothing more to come."""
        stream = self.command(proc).streams.get(fd)
        if stream is None:
            raise InvalidError(f"fd {fd}: expected 1 (stdout) or 2 (stderr)")
        return await stream.read(offset, wait, limit)

    def write(self, proc: int, data: bytes, eof: bool) -> None:
        self._active()
        command = self.command(proc)
        if command.code is not None:
            return
        if data:
            self._send({"op": "in", "proc": proc, "data": data})
        if eof:
            self._send({"op": "in_eof", "proc": proc})

    def signal(self, proc: int, signum: int) -> None:
        with contextlib.suppress(InvalidError):
            self._send({"op": "signal", "proc": proc, "signal": int(signum)})

    async def file(self, op: str, **fields: Any) -> Any:
        """A file operation, done by the agent inside the sandbox."""
        self._active()
        answer = await self._ask({"op": op, **fields})
        result = answer.get("result")
        if op == "read":
            if not isinstance(result, str):
                raise InvalidError("a malformed answer from the sandbox")
            return base64.b64decode(result)
        return result

    async def watch(self, path: str, recursive: bool) -> int:
        """Start watching ``path`` (``recursive``: its whole tree) from inside; the watch's
        number, for :meth:`watch_read` and :meth:`unwatch`."""
        self._active()
        number = next(self._next_watch)
        self.watches[number] = Watch()
        try:
            await self._ask({"op": "watch", "watch": number, "path": path, "recursive": recursive})
        except BaseException:
            self.watches.pop(number).end()
            raise
        return number

    async def snapshot(self, limit: int) -> bytes:
        """A tar of its working directory's contents, made inside (at most ``limit`` bytes).

        Raises:
            InvalidError: it is over ``limit``, or the sandbox has ended.
        """
        self._active()
        inside = "/.shoal/run/snapshot.tar"
        await self._ask(
            {"op": "snapshot", "path": self.spec.workdir, "out": inside, "limit": limit}
        )
        host = os.path.join(self._private, "run", "snapshot.tar")
        # Its code can write that folder too: never follow a link it put there (it would
        # lead to the host's files), and read no more than the limit.
        try:
            fd = os.open(host, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as exc:
            raise InvalidError(f"the snapshot could not be read: {exc.strerror}") from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise InvalidError("the snapshot is not a file")
            with os.fdopen(os.dup(fd), "rb") as found:
                data = found.read(limit + 1)
        finally:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(host)
        if len(data) > limit:
            raise InvalidError(f"the snapshot is over the {limit} bytes allowed")
        return data

    def watched(self, number: int) -> Watch:
        found = self.watches.get(number)
        if found is None:
            raise NotFoundError(f"no watch {number} in sandbox {self.object_id}")
        return found

    async def unwatch(self, number: int) -> None:
        watch = self.watches.pop(number, None)
        if watch is None:
            return
        watch.end()
        if not self.ended.is_set():
            await self._ask({"op": "unwatch", "watch": number})

    # -- ending ----------------------------------------------------------------------------

    def _active(self) -> None:
        """Something used the sandbox now (an exec, stdin, a file operation)."""
        self._last_active = time.monotonic()

    async def _watch_idle(self, idle: float) -> None:
        """End it once it has been idle for ``idle`` seconds: no exec running, and no exec
        started, stdin written or file used meanwhile (its own command's work is not use)."""
        while not self.ended.is_set():
            await asyncio.sleep(min(1.0, idle / 4))
            running = any(c.code is None for p, c in self.commands.items() if p != 0)
            if running:
                self._active()
            elif time.monotonic() - self._last_active >= idle:
                self._finish(TIMEOUT_CODE, "idle timeout")

    def _timed_out(self) -> None:
        self._finish(TIMEOUT_CODE, "timeout")

    def terminate(self) -> None:
        self._finish(TERMINATED_CODE, "terminated")

    def _finish(self, code: int, reason: str) -> None:
        if self.ended.is_set():
            return
        self.returncode = code
        self.reason = reason
        self.ended.set()
        for callback in self.ended_callbacks:
            callback()
        if self._deadline is not None:
            self._deadline.cancel()
        for command in self.commands.values():
            if command.timer is not None:
                command.timer.cancel()
            for stream in command.streams.values():
                if not stream.eof:
                    stream.end()
            if command.code is None:
                command.code = TERMINATED_CODE
                command.exited.set()
        for watch in self.watches.values():
            watch.end()
        for future in self._pending.values():
            if not future.done():
                future.set_result(
                    {"op": "error", "type": "InvalidError", "message": "sandbox ended"}
                )
        self._pending.clear()
        self._own(self._cleanup())

    async def _cleanup(self) -> None:
        """Kill everything left in the jail; remove its cgroups and folder."""
        if self._writer is not None:
            self._writer.close()
        process = self._process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
        if self._link is not None:
            link, self._link = self._link, None
            await link.close()
        if self._group is not None:
            group, self._group = self._group, None
            groups = self._groups or cgroups.Pool(keep=0)
            await asyncio.to_thread(groups.give, group)
        if self._private:
            shutil.rmtree(self._private, ignore_errors=True)

    def kill_now(self) -> None:
        """Kill the jail and remove its group and folder, without the loop (at exit)."""
        if self._link is not None:
            self._link.close_now()
        process = self._process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        if self._group is not None:
            group, self._group = self._group, None
            group.remove(0.5)
        if self._private:
            shutil.rmtree(self._private, ignore_errors=True)

    async def wait_closed(self) -> None:
        """Wait until it has ended and its cleanup is done."""
        await self.ended.wait()
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def describe(self) -> dict[str, Any]:
        return {
            "object_id": self.object_id,
            "app": self.spec.app,
            "name": self.spec.name,
            "tags": self.tags,
            "created": self.created,
            "command": list(self.spec.command),
            "returncode": self.returncode,
            "reason": self.reason,
        }


async def _ready() -> None:
    """Nothing to wait for."""


def _modal_code(code: int) -> int:
    """A process's exit status as a shell (and Modal) reports it: 128+N for signal N."""
    return 128 - code if code < 0 else code


def _agent_error(answer: dict[str, Any]) -> Exception:
    """The error a file operation or exec failed with inside, for the caller: a missing
    path is NotFoundError, anything else InvalidError (the kind leads its message)."""
    kind = str(answer.get("type", "Error"))[:64]
    message = str(answer.get("message", ""))[:2000]
    if kind == "FileNotFoundError":
        return NotFoundError(message)
    return InvalidError(f"{kind}: {message}")


class Sandboxes:
    """Every sandbox of this server, live and recently ended."""

    def __init__(self) -> None:
        self._all: dict[str, Sandbox] = {}
        #: Ended sandboxes still listed, oldest first (the first forgotten).
        self._ended: collections.deque[str] = collections.deque()
        #: Told of each sandbox once it started, and once it ended (the server keeps
        #: them in its store).
        self.on_started: Callable[[Sandbox], None] | None = None
        self.on_ended: Callable[[Sandbox], None] | None = None
        self._problem: str | None = None
        self._groups = cgroups.Pool()  # sweeps the groups of dead servers' sandboxes
        isolation.sweep_folders(PRIVATE)  # and their folders
        atexit.register(self._at_exit)  # after the pool's: atexit runs the last first
        #: Sandboxes' images: built on this machine, where sandboxes run, whatever the
        #: functions' backend, with their commands jailed (see backends/image_jail.py).
        self._images = ImageBuilder(settings.image_cache(), jailed=True)
        #: What each recipe built to (a recipe's digest hashes its files; found once).
        self._built: dict[Recipe, Environment] = {}

    async def build_image(self, recipe: Recipe, log: Callable[[str], None]) -> Environment:
        """The environment of a sandbox's image ``recipe``, built (or found) here.

        Raises:
            InvalidError: isolation does not work here.
            ImageBuildError: a step failed.
        """
        why = self.problem()
        if why:
            raise InvalidError(f"sandboxes need isolation, which does not work here: {why}")
        built = self._built.get(recipe)
        if built is None:
            built = self._built[recipe] = await self._images.build(recipe, log)
        return built

    def problem(self) -> str:
        """ "" when sandboxes can run here, else why not."""
        if self._problem is None:
            self._problem = isolation.problem()
        return self._problem

    async def create(self, spec: SandboxSpec) -> Sandbox:
        """Start a sandbox of ``spec``.

        Raises:
            InvalidError: isolation does not work here (said why), or its name is taken.
            ExecutionError: it could not start.
        """
        why = self.problem()
        if why:
            raise InvalidError(f"sandboxes need isolation, which does not work here: {why}")
        if spec.name and self.named(spec.app, spec.name, live=True) is not None:
            raise InvalidError(f"a running sandbox of app {spec.app!r} is named {spec.name!r}")
        for attempt in range(_START_ATTEMPTS):
            sandbox = Sandbox(spec, self._groups)
            try:
                await sandbox.start()
                break
            except OSError as exc:
                # The kernel now and then fails one namespace's set-up under a burst of
                # them ("bwrap: loopback: Failed RTM_NEWADDR"): a new jail gets through.
                if "bwrap:" not in str(exc) or attempt + 1 == _START_ATTEMPTS:
                    raise ExecutionError(str(exc)) from None
        self._all[sandbox.object_id] = sandbox
        sandbox.ended_callbacks.append(lambda: self._forget_old(sandbox.object_id))
        if sandbox.ended.is_set():  # it ended as it started
            self._forget_old(sandbox.object_id)
        if self.on_started is not None:
            self.on_started(sandbox)
        if self.on_ended is not None:
            told = self.on_ended
            sandbox.ended_callbacks.append(lambda: told(sandbox))
            if sandbox.ended.is_set():  # it ended as it started
                told(sandbox)
        return sandbox

    def _forget_old(self, ended: str) -> None:
        """Note that sandbox ``ended`` ended; forget the oldest ended past the few kept."""
        self._ended.append(ended)
        while len(self._ended) > _KEEP_ENDED:
            self._all.pop(self._ended.popleft(), None)

    def get(self, object_id: str) -> Sandbox:
        found = self._all.get(object_id)
        if found is None:
            raise NotFoundError(f"no sandbox {object_id!r}")
        return found

    def named(self, app: str, name: str, live: bool = True) -> Sandbox | None:
        for sandbox in self._all.values():
            if sandbox.spec.app == app and sandbox.spec.name == name:
                if not live or not sandbox.ended.is_set():
                    return sandbox
        return None

    def list(self, app: str = "", tags: dict[str, str] | None = None) -> list[Sandbox]:
        """The running sandboxes (of ``app``, with every tag of ``tags``), oldest first."""
        return [
            s
            for s in self._all.values()
            if not s.ended.is_set()
            and (not app or s.spec.app == app)
            and all(s.tags.get(k) == v for k, v in (tags or {}).items())
        ]

    async def stop_app(self, app: str) -> None:
        """Terminate every sandbox of ``app``."""
        found = self.list(app)
        for sandbox in found:
            sandbox.terminate()
        await asyncio.gather(*(s.wait_closed() for s in found))

    def _at_exit(self) -> None:
        """The process exits with sandboxes still running (an embedded server is not
        stopped first): end them now, so no jail, group or folder outlives it."""
        for sandbox in self._all.values():
            sandbox.kill_now()

    async def close(self) -> None:
        """Terminate them all and wait for their cleanup."""
        found = list(self._all.values())
        for sandbox in found:
            sandbox.terminate()
        await asyncio.gather(*(s.wait_closed() for s in found))
        await asyncio.to_thread(self._groups.close)


def volumes_of(body: dict[str, Any]) -> list[tuple[str, str, bool, bool]]:
    """The volumes a ``sandbox_create`` request asks for: (path inside, volume name,
    create if missing, read-only).

    Raises:
        InvalidError: a malformed entry, a path that is not absolute or is given twice.
    """
    given = body.get("volumes") or []
    if not isinstance(given, list):
        raise InvalidError("volumes: expected a list")
    found: list[tuple[str, str, bool, bool]] = []
    for entry in given:
        path, name = (entry.get("path"), entry.get("name")) if isinstance(entry, dict) else (0, 0)
        if not (isinstance(path, str) and isinstance(name, str) and name):
            raise InvalidError("volumes: expected entries of a path and a volume's name")
        normal = os.path.normpath(path)
        if not normal.startswith("/") or normal == "/" or normal.startswith("/.shoal"):
            raise InvalidError(f"volumes: {path!r} must be absolute, not / and not /.shoal")
        if any(normal == other for other, *_ in found):
            raise InvalidError(f"volumes: two volumes at {normal}")
        found.append((normal, name, bool(entry.get("create")), bool(entry.get("read_only"))))
    return found


def _write_file(path: str, data: bytes) -> None:
    with open(path, "wb") as out:
        out.write(data)


def _restored(recipe: Recipe | None) -> bytes:
    """The snapshot a sandbox of ``recipe`` starts from: its last ``archive`` step ("":
    none)."""
    found = [step.data for step in recipe.steps if step.kind == "archive"] if recipe else []
    return found[-1] if found else b""


def snapshot_recipe(base: Recipe | None, data: bytes) -> Recipe:
    """The image of a snapshot: ``base`` (the sandbox's own image) and the snapshot's files."""
    base = base or Recipe()
    return Recipe(base.python_version, (*base.steps, Step("archive", (), data)), base.features)


def spec_of(
    body: dict[str, Any], image: Environment | None = None, recipe: Recipe | None = None
) -> SandboxSpec:
    """The spec a ``sandbox_create`` request asks for (in ``image``, built for it; its
    ``volumes`` already resolved to host folders by the server).

    Raises:
        InvalidError: a field of the wrong kind or out of range.
    """
    app = body.get("app")
    if not isinstance(app, str) or not app:
        raise InvalidError("app: expected an app's name")
    command = body.get("command") or []
    if not isinstance(command, list) or not all(isinstance(a, str) for a in command):
        raise InvalidError("command: expected a list of strings")
    timeout = body.get("timeout", 300.0)
    if not isinstance(timeout, int | float) or not 0 < timeout <= 24 * 3600:
        raise InvalidError("timeout: expected seconds, more than 0 and at most 86400")
    workdir = body.get("workdir") or "/root"
    if not isinstance(workdir, str) or not workdir.startswith("/"):
        raise InvalidError("workdir: expected an absolute path")
    env = body.get("env") or {}
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in env.items()
    ):
        raise InvalidError("env: expected a map of strings")
    tags = body.get("tags") or {}
    if not isinstance(tags, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in tags.items()
    ):
        raise InvalidError("tags: expected a map of strings")
    name = body.get("name") or ""
    if not isinstance(name, str):
        raise InvalidError("name: expected text")
    idle = body.get("idle_timeout")
    if idle is not None and (not isinstance(idle, int | float) or not 0 < idle <= timeout):
        raise InvalidError("idle_timeout: expected seconds, above 0 and at most the timeout")
    cpu, memory = body.get("cpu"), body.get("memory")
    if cpu is not None and (not isinstance(cpu, int | float) or cpu <= 0):
        raise InvalidError("cpu: expected a number of cores above 0")
    if memory is not None and (not isinstance(memory, int) or memory < 16):
        raise InvalidError("memory: expected MiB, at least 16")
    limits = cgroups.Limits(
        memory=(memory or _DEFAULT_MEMORY_MIB) * 1024 * 1024,
        pids=_DEFAULT_PIDS,
        cpu=float(cpu) if cpu is not None else None,
    )
    return SandboxSpec(
        app=app,
        command=tuple(command),
        timeout=float(timeout),
        workdir=workdir,
        env=tuple(env.items()),
        block_network=bool(body.get("block_network")),
        name=name,
        tags=tuple(tags.items()),
        limits=limits,
        image=image,
        idle_timeout=float(idle) if idle is not None else None,
        volumes=tuple(body.get("volume_folders") or ()),
        cidr_allowlist=_allowlist(body),
        pty=bool(body.get("pty")),
        ports=_ports(body),
        recipe=recipe,
    )


def _ports(body: dict[str, Any]) -> tuple[tuple[int, bool], ...]:
    """A request's ``encrypted_ports`` and ``unencrypted_ports``: (port, encrypted).

    Raises:
        InvalidError: not port numbers, a port given twice, or no network to forward.
    """
    found: list[tuple[int, bool]] = []
    for key, encrypted in (("encrypted_ports", True), ("unencrypted_ports", False)):
        given = body.get(key) or []
        if not isinstance(given, list) or not all(
            isinstance(p, int) and not isinstance(p, bool) and 0 < p < 65536 for p in given
        ):
            raise InvalidError(f"{key}: expected a list of port numbers")
        found += [(port, encrypted) for port in given]
    if len({port for port, _ in found}) < len(found):
        raise InvalidError("a port is declared twice")
    if found and (body.get("block_network") or netstack.problem()):
        why = "block_network=True" if body.get("block_network") else netstack.problem()
        raise InvalidError(f"ports need the sandbox's network, and it has none: {why}")
    return tuple(found)


def _allowlist(body: dict[str, Any]) -> tuple[str, ...] | None:
    """A request's ``cidr_allowlist`` (None: none given).

    Raises:
        InvalidError: not a list of networks, given with ``block_network``, or not
            enforceable here.
    """
    given = body.get("cidr_allowlist")
    if given is None:
        return None
    if not isinstance(given, list) or not all(isinstance(c, str) for c in given):
        raise InvalidError("cidr_allowlist: expected a list of networks (10.0.0.0/8)")
    if body.get("block_network"):
        raise InvalidError("cidr_allowlist and block_network=True: choose one")
    try:
        found = netstack.networks(given)
    except ValueError as exc:
        raise InvalidError(f"cidr_allowlist: {exc}") from None
    why = netstack.allowlist_problem() or netstack.problem()
    if why:
        raise InvalidError(f"cidr_allowlist cannot be enforced here: {why}")
    return tuple(str(n) for n in found)


#: A sandbox's memory (MiB) and processes when not told otherwise.
_DEFAULT_MEMORY_MIB = 1024
_DEFAULT_PIDS = 512
