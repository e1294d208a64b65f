"""The agent inside a sandbox: runs its commands and file operations, in its namespaces.

Run by the server's own interpreter inside the sandbox (``python -I -S agent.py SOCKET
pty|pipes ARGV...``: the sandbox's own command, if any, on a terminal or on pipes),
importing only modules built into the interpreter, so it starts in about the
interpreter's own start-up time. It connects to the server at SOCKET (a Unix socket
in a folder of this sandbox alone; it removes the path once connected) and speaks
frames of a 4-byte big-endian length and a body: from the server, a ``marshal``-ed dict
(the agent trusts its server); to the server, JSON (the server trusts nothing from a
sandbox: code inside can reach this socket too), with bytes in base64. Everything a
command or a file operation does happens here, inside the sandbox: a path is resolved by
this process, in the sandbox's own mount namespace, so a link planted inside can only
lead to the sandbox's own files.

Ops (each request carries ``id``; a command is named by its ``proc``):
``exec`` (argv, cwd, env, pty: starts a command with pipes, or on a pseudo-terminal;
``started`` or ``error``),
``in`` / ``in_eof`` (its stdin), ``signal`` (its process group), file ops ``read``,
``write``, ``ls``, ``mkdir``, ``rm``, ``stat`` (``done`` with a result, or ``error``),
``watch`` (watch, path, recursive) and ``unwatch`` (watch): changes under a path, each
sent as ``fsevent`` (watch, kind: Access, Create, Modify or Remove, paths); ``snapshot``
(path, out, limit): a tar of a folder's contents written to ``out``.
It sends ``out`` (proc, fd, data) as a command writes, ``eof`` (proc, fd) and ``exit``
(proc, code). Process 0 is the sandbox's own command (argv given at start, if any).

It is one thread around one ``poll``: it starts no thread per command, so code that fills
the sandbox's process limit (a fork bomb) cannot stop it from answering, and a command
that does not read its stdin holds up only what is written to that stdin.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # signal imports enum: 8 ms of start-up
import _socket
import binascii
import marshal
import os
import select
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs the agent's start-up some 10 ms: checked, not imported
    from typing import Any

_MAX_FRAME = 4 * 1024 * 1024
_CHUNK = 64 * 1024
#: Seconds an exited command's output may take to drain before its exit is told (a child
#: that left its process group may hold the pipes open).
_DRAIN = 1.0
_SIGKILL = 9
_SIGCHLD = 17 if sys.platform == "linux" else 20
_READ = select.POLLIN | select.POLLHUP | select.POLLERR
_WRITE = select.POLLOUT | select.POLLERR


def _json(value: Any) -> str:
    """``value`` (None, bool, int, float, str, list or dict of them) as JSON."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        if any(ord(c) < 32 for c in escaped):
            escaped = "".join(c if ord(c) >= 32 else f"\\u{ord(c):04x}" for c in escaped)
        return f'"{escaped}"'
    if isinstance(value, list | tuple):
        return "[" + ",".join(_json(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{_json(str(k))}:{_json(v)}" for k, v in value.items()) + "}"
    return _json(str(value))


def _b64(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode()


class _Command:
    def __init__(self, proc: int, pid: int, stdin: int, stdout: int, stderr: int) -> None:
        self.proc = proc
        self.pid = pid
        self.stdin = stdin
        self.outputs = {stdout: 1, stderr: 2} if stderr >= 0 else {stdout: 1}
        self.stdin_buffer = bytearray()
        self.stdin_eof = False
        self.code: int | None = None
        self.exited_at = 0.0


def _terminal() -> tuple[int, int]:
    """A pseudo-terminal of 24 rows and 80 columns: (its controller, its terminal)."""
    import fcntl  # only for a terminal: not on every command's path
    import termios

    controller, terminal = os.openpty()
    size = (24).to_bytes(2, sys.byteorder) + (80).to_bytes(2, sys.byteorder) + bytes(4)
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, size)
    return controller, terminal


def _spawn(
    argv: list[str], cwd: str | None, env: dict[str, str], pty: bool = False
) -> tuple[int, int, int, int]:
    """Fork and exec ``argv`` in a session of its own with pipes for its standard
    streams (or, with ``pty``, a pseudo-terminal for all three, its controlling
    terminal); its pid and our ends of its stdin, stdout and stderr (-1: none, with a
    terminal, whose output is all on stdout).

    Raises:
        OSError: it could not be started (the errno the child's exec failed with).
    """
    ours = []
    theirs = []
    if pty:
        controller, terminal = _terminal()
        ours, theirs = [os.dup(controller), controller], [terminal]
    else:
        for writes_in in (True, False, False):
            read_end, write_end = os.pipe()
            ours.append(write_end if writes_in else read_end)
            theirs.append(read_end if writes_in else write_end)
    failed_read, failed_write = os.pipe()
    environment = dict(os.environ)
    environment.update(env)
    if pty:
        environment.setdefault("TERM", "xterm-256color")
    pid = os.fork()
    if pid == 0:  # the child: never returns
        _become(argv, cwd, environment, theirs, [*ours, failed_read], failed_write, pty)
    os.close(failed_write)
    for fd in theirs:
        os.close(fd)
    failure = os.read(failed_read, 1024)
    os.close(failed_read)
    if failure:
        os.waitpid(pid, 0)
        for fd in ours:
            os.close(fd)
        number, _, text = failure.decode().partition(":")
        raise OSError(int(number), f"{text}: {argv[0]!r}")
    for fd in ours:
        os.set_blocking(fd, False)
    if pty:
        return pid, ours[0], ours[1], -1
    return pid, ours[0], ours[1], ours[2]


def _become(
    argv: list[str],
    cwd: str | None,
    environment: dict[str, str],
    theirs: list[int],
    others: list[int],
    failed: int,
    pty: bool,
) -> None:
    """In the forked child: take ``theirs`` as its standard streams (a terminal: all
    three), close ``others`` and exec ``argv``; never returns (its exec's failure is
    written to ``failed``)."""
    try:
        if pty:
            os.login_tty(theirs[0])  # its session, controlling terminal and streams
        else:
            os.setsid()
            for target, fd in enumerate(theirs):
                os.dup2(fd, target)
        for fd in (*others, *theirs):
            try:
                os.close(fd)
            except OSError:  # login_tty closed the terminal already
                pass
        os.set_inheritable(failed, False)
        if cwd:
            os.chdir(cwd)
        os.execvpe(argv[0], argv, environment)
    except OSError as exc:
        os.write(failed, f"{exc.errno}:{exc.strerror}".encode())
    finally:
        os._exit(127)


#: inotify's event bits, and the kind of change each is reported as.
_KINDS = {
    0x001: "Access",  # IN_ACCESS
    0x002: "Modify",  # IN_MODIFY
    0x004: "Modify",  # IN_ATTRIB
    0x008: "Modify",  # IN_CLOSE_WRITE
    0x040: "Remove",  # IN_MOVED_FROM
    0x080: "Create",  # IN_MOVED_TO
    0x100: "Create",  # IN_CREATE
    0x200: "Remove",  # IN_DELETE
    0x400: "Remove",  # IN_DELETE_SELF
}
_IN_ISDIR = 0x40000000
_IN_IGNORED = 0x8000


class Watches:
    """Folders and files watched with inotify (``watch`` / ``unwatch``), each event told
    to the server as ``fsevent`` (watch, kind, paths); made on first use (ctypes, which it
    needs, costs start-up no command needs)."""

    def __init__(self, send: Any) -> None:
        import ctypes

        self._libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self._libc.inotify_init1(0o4000 | 0o2000000)  # IN_NONBLOCK, IN_CLOEXEC
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self._send = send
        self._ctypes = ctypes
        #: inotify's watch descriptor -> (our watch id, its path, recursive).
        self._by_wd: dict[int, tuple[int, str, bool]] = {}

    def add(self, watch: int, path: str, recursive: bool) -> None:
        folders = [path]
        if recursive and os.path.isdir(path):
            for root, dirs, _ in os.walk(path):
                folders += [os.path.join(root, d) for d in dirs]
        for folder in folders:
            self._add_one(watch, folder, recursive)

    def _add_one(self, watch: int, path: str, recursive: bool) -> None:
        mask = 0
        for bit in _KINDS:
            mask |= bit
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(path), mask)
        if wd < 0:
            number = self._ctypes.get_errno()
            raise OSError(number, f"{os.strerror(number)}: {path!r}")
        self._by_wd[wd] = (watch, path, recursive)

    def remove(self, watch: int) -> None:
        for wd, (owner, _, _) in list(self._by_wd.items()):
            if owner == watch:
                del self._by_wd[wd]
                self._libc.inotify_rm_watch(self.fd, wd)

    def read(self) -> None:
        try:
            data = os.read(self.fd, 64 * 1024)
        except BlockingIOError:
            return
        at = 0
        while at + 16 <= len(data):
            wd = int.from_bytes(data[at : at + 4], sys.byteorder, signed=True)
            mask = int.from_bytes(data[at + 4 : at + 8], sys.byteorder)
            size = int.from_bytes(data[at + 12 : at + 16], sys.byteorder)
            name = data[at + 16 : at + 16 + size].split(b"\0", 1)[0].decode(errors="replace")
            at += 16 + size
            found = self._by_wd.get(wd)
            if found is None or mask & _IN_IGNORED:
                continue
            watch, folder, recursive = found
            path = os.path.join(folder, name) if name else folder
            if recursive and mask & _IN_ISDIR and mask & (0x100 | 0x080):
                try:
                    self.add(watch, path, True)  # a new folder of a watched tree
                except OSError:
                    pass
            for bit, kind in _KINDS.items():
                if mask & bit:
                    self._send({"op": "fsevent", "watch": watch, "kind": kind, "paths": [path]})
                    break


class Agent:
    """The agent's loop (see the module docstring)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.poller = select.poll()
        self.commands: dict[int, _Command] = {}
        self.by_fd: dict[int, tuple[str, _Command]] = {}
        self.inbox = bytearray()
        self.watches: Watches | None = None
        self.wake_read, wake_write = os.pipe()
        os.set_blocking(self.wake_read, False)
        os.set_blocking(wake_write, False)
        _signal.set_wakeup_fd(wake_write)
        _signal.signal(_SIGCHLD, lambda *_: None)
        self.poller.register(self.wake_read, _READ)
        self.poller.register(conn.fileno(), _READ)

    def send(self, message: dict[str, Any]) -> None:
        data = _json(message).encode()
        self.conn.sendall(len(data).to_bytes(4, "big") + data)

    # -- commands ---------------------------------------------------------------

    def start(
        self,
        ident: int,
        proc: int,
        argv: list[str],
        cwd: str | None,
        env: dict[str, str],
        pty: bool = False,
    ) -> int:
        """Start a command and answer request ``ident`` with its pid (with a terminal, its
        stderr ends at once: everything it writes comes on stdout)."""
        pid, stdin, stdout, stderr = _spawn(argv, cwd, env, pty)
        command = self.commands[proc] = _Command(proc, pid, stdin, stdout, stderr)
        for fd in command.outputs:
            self.by_fd[fd] = ("out", command)
            self.poller.register(fd, _READ)
        self.send({"op": "started", "id": ident, "pid": pid})
        if pty:
            self.send({"op": "eof", "proc": proc, "fd": 2})
        return pid

    def output(self, command: _Command, fd: int) -> None:
        try:
            data = os.read(fd, _CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        which = command.outputs[fd]
        if data:
            self.send({"op": "out", "proc": command.proc, "fd": which, "data": _b64(data)})
            return
        self.poller.unregister(fd)
        del self.by_fd[fd], command.outputs[fd]
        os.close(fd)
        self.send({"op": "eof", "proc": command.proc, "fd": which})

    def feed(self, command: _Command) -> None:
        """Write what is buffered for its stdin (as much as the pipe takes now)."""
        if command.stdin < 0:
            command.stdin_buffer.clear()
            return
        try:
            while command.stdin_buffer:
                written = os.write(command.stdin, command.stdin_buffer)
                del command.stdin_buffer[:written]
        except BlockingIOError:
            pass
        except OSError:  # it closed its stdin, or exited
            command.stdin_buffer.clear()
        waiting = bool(command.stdin_buffer)
        watched = command.stdin in self.by_fd
        if waiting and not watched:
            self.by_fd[command.stdin] = ("in", command)
            self.poller.register(command.stdin, _WRITE)
        elif not waiting and watched:
            self._unwatch(command.stdin)
        if not waiting and command.stdin_eof:
            self._close_stdin(command)

    def _unwatch(self, fd: int) -> None:
        if fd in self.by_fd:
            del self.by_fd[fd]
            self.poller.unregister(fd)

    def _close_stdin(self, command: _Command) -> None:
        if command.stdin >= 0:
            self._unwatch(command.stdin)
            os.close(command.stdin)
            command.stdin = -1

    def reap(self) -> None:
        """Note each command that exited; end what it left in its process group."""
        # One wait for any child: a command's own status is never taken by a wait for
        # orphans (this process is their reaper) and then lost to a later wait by pid.
        running = {c.pid: c for c in self.commands.values() if c.code is None}
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid <= 0:
                return
            command = running.pop(pid, None)
            if command is None:
                continue  # an orphan of this sandbox
            command.code = os.waitstatus_to_exitcode(status)
            command.exited_at = time.monotonic()
            try:
                os.killpg(command.pid, _SIGKILL)
            except OSError:
                pass

    def tell_exits(self) -> float | None:
        """Tell the exits whose output has drained (or waited long enough); the seconds
        until the next one is due, if any waits."""
        due: float | None = None
        for proc, command in list(self.commands.items()):
            if command.code is None:
                continue
            left = command.exited_at + _DRAIN - time.monotonic()
            if command.outputs and left > 0:
                due = left if due is None else min(due, left)
                continue
            self._close_stdin(command)
            for fd in list(command.outputs):
                self._unwatch(fd)
                os.close(fd)
            del self.commands[proc]
            self.send({"op": "exit", "proc": proc, "code": command.code})
        return due

    # -- requests ---------------------------------------------------------------------

    def receive(self) -> bool:
        data = self.conn.recv(_MAX_FRAME)
        if not data:
            return False
        self.inbox += data
        while len(self.inbox) >= 4:
            length = int.from_bytes(self.inbox[:4], "big")
            if length > _MAX_FRAME:
                return False
            if len(self.inbox) < 4 + length:
                break
            body = bytes(self.inbox[4 : 4 + length])
            del self.inbox[: 4 + length]
            self.answer(marshal.loads(body))
        return True

    def answer(self, request: dict[str, Any]) -> None:
        op, ident = request.get("op"), request.get("id")
        try:
            if op == "exec":
                cwd, env = request.get("cwd"), request.get("env") or {}
                pty = bool(request.get("pty"))
                self.start(request["id"], request["proc"], list(request["argv"]), cwd, env, pty)
            elif op in ("in", "in_eof"):
                command = self.commands.get(request["proc"])
                if command is not None:
                    if op == "in":
                        command.stdin_buffer += request["data"]
                    else:
                        command.stdin_eof = True
                    self.feed(command)
            elif op in ("watch", "unwatch"):
                self.watch(request)
                self.send({"op": "done", "id": ident, "result": None})
            elif op == "signal":
                command = self.commands.get(request["proc"])
                if command is not None:
                    try:
                        os.killpg(command.pid, int(request["signal"]))
                    except OSError:
                        pass
            else:
                self.send({"op": "done", "id": ident, "result": _file_op(str(op), request)})
        except Exception as exc:  # told to the server, which tells the caller
            error = {"op": "error", "id": ident, "type": type(exc).__name__, "message": str(exc)}
            self.send(error)

    def watch(self, request: dict[str, Any]) -> None:
        """Start (``watch``: path, recursive) or end (``unwatch``) watch ``watch``."""
        if request["op"] == "unwatch":
            if self.watches is not None:
                self.watches.remove(request["watch"])
            return
        if self.watches is None:
            self.watches = Watches(self.send)
            self.poller.register(self.watches.fd, _READ)
        self.watches.add(request["watch"], request["path"], bool(request.get("recursive")))

    def run(self) -> None:
        conn = self.conn.fileno()
        due: float | None = None
        while True:
            timeout = None if due is None else max(0, int(due * 1000) + 1)
            for fd, _ in self.poller.poll(timeout):
                if fd == conn:
                    if not self.receive():
                        return
                elif self.watches is not None and fd == self.watches.fd:
                    self.watches.read()
                elif fd == self.wake_read:
                    try:
                        os.read(fd, 4096)
                    except BlockingIOError:
                        pass
                elif fd in self.by_fd:
                    kind, command = self.by_fd[fd]
                    if kind == "out":
                        self.output(command, fd)
                    else:
                        self.feed(command)
            self.reap()
            due = self.tell_exits()


def _remove(path: str) -> None:
    """Remove ``path``, a folder with everything in it (links are removed, not followed)."""
    if os.path.isdir(path) and not os.path.islink(path):
        with os.scandir(path) as entries:
            for entry in entries:
                _remove(entry.path)
        os.rmdir(path)
    else:
        os.unlink(path)


def _file_op(op: str, request: dict[str, Any]) -> Any:
    path = request["path"]
    if op == "read":
        with open(path, "rb") as source:
            return _b64(source.read(_MAX_FRAME // 2))
    if op == "write":
        with open(path, "ab" if request.get("append") else "wb") as target:
            target.write(request["data"])
        return None
    if op == "ls":
        return sorted(os.listdir(path))
    if op == "mkdir":
        if request.get("parents"):
            os.makedirs(path, exist_ok=True)
        else:
            os.mkdir(path)
        return None
    if op == "rm":
        if request.get("recursive"):
            _remove(path)
        elif os.path.isdir(path) and not os.path.islink(path):
            os.rmdir(path)
        else:
            os.unlink(path)
        return None
    if op == "snapshot":
        return _snapshot(path, request["out"], int(request["limit"]))
    if op == "stat":
        found = os.lstat(path)
        kinds = {0o040000: "dir", 0o120000: "link"}
        kind = kinds.get(found.st_mode & 0o170000, "file")
        return {"kind": kind, "size": found.st_size, "mtime": found.st_mtime}
    raise ValueError(f"unknown op {op!r}")


def _snapshot(path: str, out: str, limit: int) -> int:
    """Write a tar of folder ``path``'s contents to ``out`` (where the server reads it);
    its size. Only what lies on the folder's own file system is taken: what is mounted
    inside it (the interpreter's folders, a volume) is not the sandbox's to snapshot.

    Raises:
        ValueError: it is over ``limit`` bytes (then nothing is left at ``out``).
    """
    import tarfile  # only for a snapshot: not on every start's path

    device = os.lstat(path).st_dev
    with tarfile.open(out, "w") as archive:
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if os.lstat(os.path.join(root, d)).st_dev == device)
            for name in [*dirs, *sorted(files)]:
                full = os.path.join(root, name)
                if os.lstat(full).st_dev == device and full != out:
                    archive.add(full, arcname=os.path.relpath(full, path), recursive=False)
    size = os.path.getsize(out)
    if size > limit:
        os.unlink(out)
        raise ValueError(f"the snapshot is {size} bytes, over the {limit} allowed")
    return size


#: A snapshot the sandbox starts from, unpacked into its working directory at start.
RESTORE = "/.shoal/run/restore.tar"


def _restore() -> None:
    """Unpack the snapshot this sandbox starts from, if any, into its working directory
    (nothing written outside it: tarfile's ``tar`` filter)."""
    if not os.path.exists(RESTORE):
        return
    import tarfile

    with tarfile.open(RESTORE, "r:") as archive:
        archive.extractall(os.getcwd(), filter="tar")
    os.unlink(RESTORE)


#: The home folders of an image's users (read-only), copied at start into /home (a
#: tmpfs of this sandbox, capped as /tmp is) with their owners and modes.
HOMES = "/.shoal/home"


def _homes() -> None:
    if not os.path.isdir(HOMES):
        return
    for folder, dirs, files in os.walk(HOMES):
        into = "/home" + folder[len(HOMES) :]
        for name in [*dirs, *files]:
            source, target = os.path.join(folder, name), os.path.join(into, name)
            info = os.lstat(source)
            if os.path.islink(source):
                os.symlink(os.readlink(source), target)
            elif name in dirs:
                os.mkdir(target, 0o700)
            else:
                with open(source, "rb") as src, open(target, "xb") as out:
                    while chunk := src.read(_CHUNK):
                        out.write(chunk)
            os.lchown(target, info.st_uid, info.st_gid)
            if not os.path.islink(source):
                os.chmod(target, info.st_mode & 0o7777)


def main() -> None:
    conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    conn.connect(sys.argv[1])
    os.unlink(sys.argv[1])  # nothing else in the sandbox can connect as the agent
    _homes()
    _restore()
    agent = Agent(conn)
    pty, argv = sys.argv[2] == "pty", sys.argv[3:]
    if argv:
        try:
            agent.start(0, 0, argv, None, {}, pty)
        except OSError as exc:
            agent.send({"op": "error", "id": 0, "type": type(exc).__name__, "message": str(exc)})
    agent.run()
    os._exit(0)


if __name__ == "__main__":
    main()
