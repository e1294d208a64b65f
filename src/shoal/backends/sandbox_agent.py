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
"""

from __future__ import annotations

import base64
import json
import os
import queue
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
from typing import IO, Any

_MAX_FRAME = 4 * 1024 * 1024
_CHUNK = 64 * 1024

_send_lock = threading.Lock()
_procs: dict[int, subprocess.Popen[bytes]] = {}
_stdin_queues: dict[int, queue.Queue[bytes | None]] = {}


def _send(conn: socket.socket, message: dict[str, Any]) -> None:
    data = json.dumps(message).encode()
    with _send_lock:
        conn.sendall(struct.pack(">I", len(data)) + data)


def _recv_exact(conn: socket.socket, n: int) -> bytes | None:
    parts = []
    while n:
        chunk = conn.recv(n)
        if not chunk:
            return None
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)


def _pump(conn: socket.socket, proc_id: int, fd: int, stream: IO[bytes]) -> None:
    while True:
        data = stream.read1(_CHUNK) if hasattr(stream, "read1") else stream.read(_CHUNK)
        if not data:
            break
        _send(
            conn, {"op": "out", "proc": proc_id, "fd": fd, "data": base64.b64encode(data).decode()}
        )
    _send(conn, {"op": "eof", "proc": proc_id, "fd": fd})


def _wait(
    conn: socket.socket, proc_id: int, popen: subprocess.Popen[bytes], pumps: list[threading.Thread]
) -> None:
    code = popen.wait()
    for pump in pumps:
        pump.join()
    try:
        os.killpg(popen.pid, signal.SIGKILL)  # what it left behind goes with it
    except OSError:
        pass
    _send(conn, {"op": "exit", "proc": proc_id, "code": code})


def _exec(
    conn: socket.socket,
    proc_id: int,
    argv: list[str],
    cwd: str | None = None,
    env: dict[str, str] | None = None,
) -> int:
    environment = dict(os.environ)
    environment.update(env or {})
    popen = subprocess.Popen(
        argv,
        cwd=cwd or None,
        env=environment,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    _procs[proc_id] = popen
    chunks = _stdin_queues[proc_id] = queue.Queue()
    threading.Thread(target=_feed, args=(popen, chunks), daemon=True).start()
    pumps = [
        threading.Thread(target=_pump, args=(conn, proc_id, 1, popen.stdout), daemon=True),
        threading.Thread(target=_pump, args=(conn, proc_id, 2, popen.stderr), daemon=True),
    ]
    for pump in pumps:
        pump.start()
    threading.Thread(target=_wait, args=(conn, proc_id, popen, pumps), daemon=True).start()
    return popen.pid


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


def _feed(popen: subprocess.Popen[bytes], chunks: queue.Queue[bytes | None]) -> None:
    """Write what the server sends to ``popen``'s stdin, on a thread of its own (a
    command that does not read its stdin stalls only this thread)."""
    stdin = popen.stdin
    assert stdin is not None
    while True:
        chunk = chunks.get()
        try:
            if chunk is None:
                stdin.close()
                return
            stdin.write(chunk)
            stdin.flush()
        except (BrokenPipeError, ValueError, OSError):
            return


def _stdin(request: dict[str, Any], eof: bool) -> None:
    chunks = _stdin_queues.get(request["proc"])
    if chunks is not None:
        chunks.put(None if eof else base64.b64decode(request["data"]))


def _signal(request: dict[str, Any]) -> None:
    popen = _procs.get(request["proc"])
    if popen is not None:
        try:
            os.killpg(popen.pid, int(request["signal"]))
        except OSError:
            pass


def _answer(conn: socket.socket, request: dict[str, Any]) -> None:
    op, ident = request.get("op"), request.get("id")
    try:
        if op == "exec":
            argv, cwd, env = request["argv"], request.get("cwd"), request.get("env")
            pid = _exec(conn, request["proc"], argv, cwd, env)
            _send(conn, {"op": "started", "id": ident, "pid": pid})
        elif op in ("in", "in_eof"):
            _stdin(request, op == "in_eof")
        elif op == "signal":
            _signal(request)
        else:
            _send(conn, {"op": "done", "id": ident, "result": _file_op(str(op), request)})
    except Exception as exc:  # told to the server, which tells the caller
        error = {"op": "error", "id": ident, "type": type(exc).__name__, "message": str(exc)}
        _send(conn, error)


def _serve(conn: socket.socket) -> None:
    while True:
        head = _recv_exact(conn, 4)
        if head is None:
            return
        (length,) = struct.unpack(">I", head)
        if length > _MAX_FRAME:
            return
        body = _recv_exact(conn, length)
        if body is None:
            return
        _answer(conn, json.loads(body))


def main() -> None:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(sys.argv[1])
    os.unlink(sys.argv[1])  # nothing else in the sandbox can connect as the agent
    argv = sys.argv[2:]
    if argv:
        try:
            pid = _exec(conn, 0, argv)
            _send(conn, {"op": "started", "id": 0, "pid": pid})
        except OSError as exc:
            _send(conn, {"op": "error", "id": 0, "type": type(exc).__name__, "message": str(exc)})
    _serve(conn)
    os._exit(0)


if __name__ == "__main__":
    main()
