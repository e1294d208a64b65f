"""The agent inside a sandbox: runs its commands and file operations, in its namespaces.

Run by the server's own interpreter inside the sandbox (``python -I -S agent.py SOCKET
ARGV...``), with the standard library only. It connects to the server at SOCKET (a
Unix socket in a folder of this sandbox alone) and speaks frames of a 4-byte length
and a JSON object; bytes travel in base64. Everything a command or a file operation
does happens here, inside the sandbox: a path is resolved by this process, in the
sandbox's own mount namespace, so a link planted inside can only lead to the
sandbox's own files.

The server treats what it hears from here as untrusted data (code in the sandbox can
reach this socket too): JSON of bounded size, checked field by field, never executed.

Ops (each request carries ``id``; a command is named by its ``proc``):
``exec`` (argv, cwd, env: starts a command with pipes; ``started`` or ``error``),
``in`` / ``in_eof`` (its stdin), ``signal`` (its process group), file ops ``read``,
``write``, ``ls``, ``mkdir``, ``rm``, ``stat`` (``done`` with a result, or ``error``).
It sends ``out`` (proc, fd, data) as a command writes, ``eof`` (proc, fd) and ``exit``
(proc, code). Process 0 is the sandbox's own command (argv given at start, if any).

It is one thread around one ``select``: it starts no thread per command, so code that
fills the sandbox's process limit (a fork bomb) cannot stop it from answering, and a
command that does not read its stdin holds up only what is written to that stdin.
"""

from __future__ import annotations

import base64
import json
import os
import selectors
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import time
from typing import Any

_MAX_FRAME = 4 * 1024 * 1024
_CHUNK = 64 * 1024
#: Seconds an exited command's output may take to drain before its exit is told (a child
#: that left its process group may hold the pipes open).
_DRAIN = 1.0


class _Command:
    def __init__(self, proc: int, popen: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.popen = popen
        self.open_outputs = 2
        self.stdin_buffer = bytearray()
        self.stdin_eof = False
        self.code: int | None = None
        self.exited_at = 0.0


class Agent:
    """The agent's loop (see the module docstring)."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.selector = selectors.DefaultSelector()
        self.commands: dict[int, _Command] = {}
        self.inbox = bytearray()
        wake_read, self.wake_write = os.pipe()
        os.set_blocking(wake_read, False)
        os.set_blocking(self.wake_write, False)
        signal.set_wakeup_fd(self.wake_write)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.selector.register(wake_read, selectors.EVENT_READ, ("wake", None, 0))
        self.selector.register(conn, selectors.EVENT_READ, ("conn", None, 0))

    def send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message).encode()
        self.conn.sendall(struct.pack(">I", len(data)) + data)

    # -- commands ---------------------------------------------------------------

    def start(self, proc: int, argv: list[str], cwd: str | None, env: dict[str, str]) -> int:
        environment = dict(os.environ)
        environment.update(env)
        popen = subprocess.Popen(
            argv,
            cwd=cwd or None,
            env=environment,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        command = self.commands[proc] = _Command(proc, popen)
        for fd, stream in ((1, popen.stdout), (2, popen.stderr)):
            assert stream is not None
            os.set_blocking(stream.fileno(), False)
            self.selector.register(stream, selectors.EVENT_READ, ("out", command, fd))
        assert popen.stdin is not None
        os.set_blocking(popen.stdin.fileno(), False)
        return popen.pid

    def output(self, command: _Command, fd: int, stream: Any) -> None:
        try:
            data = os.read(stream.fileno(), _CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            chunk = base64.b64encode(data).decode()
            self.send({"op": "out", "proc": command.proc, "fd": fd, "data": chunk})
            return
        self.selector.unregister(stream)
        stream.close()
        command.open_outputs -= 1
        self.send({"op": "eof", "proc": command.proc, "fd": fd})

    def feed(self, command: _Command) -> None:
        """Write what is buffered for its stdin (as much as the pipe takes now)."""
        stdin = command.popen.stdin
        if stdin is None or stdin.closed:
            command.stdin_buffer.clear()
            return
        try:
            while command.stdin_buffer:
                written = os.write(stdin.fileno(), command.stdin_buffer)
                del command.stdin_buffer[:written]
        except BlockingIOError:
            pass
        except OSError:  # it closed its stdin, or exited
            command.stdin_buffer.clear()
        waiting = bool(command.stdin_buffer)
        registered = self._has(stdin)
        if waiting and not registered:
            self.selector.register(stdin, selectors.EVENT_WRITE, ("in", command, 0))
        elif not waiting and registered:
            self.selector.unregister(stdin)
        if not waiting and command.stdin_eof:
            stdin.close()

    def _has(self, stream: Any) -> bool:
        try:
            self.selector.get_key(stream)
        except (KeyError, ValueError):
            return False
        return True

    def reap(self) -> None:
        """Note each command that exited; end what it left in its process group."""
        for command in self.commands.values():
            if command.code is None and command.popen.poll() is not None:
                command.code = command.popen.returncode
                command.exited_at = time.monotonic()
                try:
                    os.killpg(command.popen.pid, signal.SIGKILL)
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
            if command.open_outputs and left > 0:
                due = left if due is None else min(due, left)
                continue
            if command.popen.stdin is not None and self._has(command.popen.stdin):
                self.selector.unregister(command.popen.stdin)
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
            (length,) = struct.unpack(">I", self.inbox[:4])
            if length > _MAX_FRAME:
                return False
            if len(self.inbox) < 4 + length:
                break
            body = bytes(self.inbox[4 : 4 + length])
            del self.inbox[: 4 + length]
            self.answer(json.loads(body))
        return True

    def answer(self, request: dict[str, Any]) -> None:
        op, ident = request.get("op"), request.get("id")
        try:
            if op == "exec":
                proc = int(request["proc"])
                cwd, env = request.get("cwd"), request.get("env") or {}
                pid = self.start(proc, list(request["argv"]), cwd, env)
                self.send({"op": "started", "id": ident, "pid": pid})
            elif op in ("in", "in_eof"):
                command = self.commands.get(int(request["proc"]))
                if command is not None:
                    if op == "in":
                        command.stdin_buffer += base64.b64decode(request["data"])
                    else:
                        command.stdin_eof = True
                    self.feed(command)
            elif op == "signal":
                command = self.commands.get(int(request["proc"]))
                if command is not None:
                    try:
                        os.killpg(command.popen.pid, int(request["signal"]))
                    except OSError:
                        pass
            else:
                self.send({"op": "done", "id": ident, "result": _file_op(str(op), request)})
        except Exception as exc:  # told to the server, which tells the caller
            error = {"op": "error", "id": ident, "type": type(exc).__name__, "message": str(exc)}
            self.send(error)

    def run(self) -> None:
        due: float | None = None
        while True:
            for key, _ in self.selector.select(due):
                kind, command, fd = key.data
                if kind == "conn":
                    if not self.receive():
                        return
                elif kind == "wake":
                    try:
                        os.read(key.fd, 4096)
                    except BlockingIOError:
                        pass
                elif kind == "out":
                    self.output(command, fd, key.fileobj)
                elif kind == "in":
                    self.feed(command)
            self.reap()
            due = self.tell_exits()


def _file_op(op: str, request: dict[str, Any]) -> Any:
    path = request["path"]
    if op == "read":
        with open(path, "rb") as source:
            return base64.b64encode(source.read(_MAX_FRAME // 2)).decode()
    if op == "write":
        mode = "ab" if request.get("append") else "wb"
        with open(path, mode) as target:
            target.write(base64.b64decode(request["data"]))
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
        if request.get("recursive") and os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.isdir(path) and not os.path.islink(path):
            os.rmdir(path)
        else:
            os.unlink(path)
        return None
    if op == "stat":
        found = os.lstat(path)
        kind = (
            "dir"
            if stat.S_ISDIR(found.st_mode)
            else "link"
            if stat.S_ISLNK(found.st_mode)
            else "file"
        )
        return {"kind": kind, "size": found.st_size, "mtime": found.st_mtime}
    raise ValueError(f"unknown op {op!r}")


def main() -> None:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(sys.argv[1])
    os.unlink(sys.argv[1])  # nothing else in the sandbox can connect as the agent
    agent = Agent(conn)
    argv = sys.argv[2:]
    if argv:
        try:
            pid = agent.start(0, argv, None, {})
            agent.send({"op": "started", "id": 0, "pid": pid})
        except OSError as exc:
            agent.send({"op": "error", "id": 0, "type": type(exc).__name__, "message": str(exc)})
    agent.run()
    os._exit(0)


if __name__ == "__main__":
    main()
