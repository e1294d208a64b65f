"""Fault injection from outside, for ``benchmarks chaos`` and the reliability tests.

Faults come the way an operator's machine delivers them: SIGKILL to a container,
to the fork server, to the caller. Nothing in Shoal is patched.
"""

from __future__ import annotations

import os
import random
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def processes() -> dict[int, tuple[int, bytes]]:
    """Live (not zombie) processes: pid -> (parent pid, command line, NULs as spaces)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            found[int(entry.name)] = (int(fields[1]), cmdline)
    return found


def state(pid: int) -> str:
    """``pid``'s state letter from /proc (``Z`` for a zombie), or ``gone``."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (exited but unreaped counts as gone)."""
    return state(pid) not in ("Z", "gone")


def with_cmdline(text: str) -> list[int]:
    """Live processes whose command line contains ``text``."""
    return [pid for pid, (_, cmdline) in processes().items() if text.encode() in cmdline]


def fork_servers(parent: int | None = None) -> set[int]:
    """Fork servers started by ``parent`` (default: this process)."""
    root = os.getpid() if parent is None else parent
    return {
        pid
        for pid, (ppid, cmdline) in processes().items()
        if ppid == root and b"shoal.backends.fork_server" in cmdline
    }


def containers(parent: int | None = None) -> set[int]:
    """Container processes of the control plane in ``parent`` (default: this process):
    started by it as fresh interpreters, or forked by its fork servers."""
    root = os.getpid() if parent is None else parent
    table = processes()
    servers = fork_servers(root)
    return {
        pid
        for pid, (ppid, cmdline) in table.items()
        if (ppid == root and b"shoal.container" in cmdline) or ppid in servers
    }


@contextmanager
def killing_containers(every: float, seed: int = 0) -> Iterator[list[int]]:
    """SIGKILL one random container every ``every`` seconds while the block runs.

    Yields the list of pids killed so far (filled in as it goes).
    """
    killed: list[int] = []
    stop = threading.Event()
    rng = random.Random(seed)

    def loop() -> None:
        while not stop.wait(every):
            live = sorted(containers())
            if live:
                victim = rng.choice(live)
                try:
                    os.kill(victim, signal.SIGKILL)
                    killed.append(victim)
                except ProcessLookupError:
                    pass

    thread = threading.Thread(target=loop, name="chaos", daemon=True)
    thread.start()
    try:
        yield killed
    finally:
        stop.set()
        thread.join()


def open_fds() -> int:
    """File descriptors this process holds."""
    return len(os.listdir("/proc/self/fd"))


def threads() -> int:
    """Threads of this process, native ones included."""
    return len(os.listdir("/proc/self/task"))


def rss() -> int:
    """Resident memory of this process, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0
