"""Memory, PID and CPU limits for isolated processes, through cgroups.

cgroup v2 is used where ``/sys/fs/cgroup`` is a writable unified hierarchy; else v1,
each controller (``memory``, ``pids``, ``cpu``) mounted on its own and writable (as on
these machines as root); else none, and the caller falls back to rlimits alone and says
so (:func:`available` tells why). A group is made under this process's own group of each
hierarchy (read from ``/proc/self/cgroup``), so the limits nest inside whatever limits
the server itself runs under. A process joins its group before it runs anything else (see
:func:`join_command`), so a fork bomb's children are counted from its first fork.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass

_ROOT = "/sys/fs/cgroup"
#: The v1 controllers used, each with its own mount under /sys/fs/cgroup.
_V1 = ("memory", "pids", "cpu")
#: CPU period (µs) against which a CPU limit's quota is set.
_PERIOD = 100_000


@dataclass(frozen=True, slots=True)
class Limits:
    """What one isolated process tree may use (None: no limit of that kind)."""

    memory: int | None = None  # bytes
    pids: int | None = None
    cpu: float | None = None  # cores


def _own(controller: str) -> str:
    """This process's group in hierarchy ``controller`` ("" for v2's), from /proc."""
    with open("/proc/self/cgroup") as found:
        for line in found:
            _, names, path = line.rstrip("\n").split(":", 2)
            if names.split(",") == [controller] or (controller == "" and names == ""):
                return path
    return "/"


def version() -> int:
    """2 for a writable unified hierarchy, 1 for writable v1 controllers, 0 for none."""
    if os.path.exists(os.path.join(_ROOT, "cgroup.controllers")):
        base = _ROOT + _own("")
        return 2 if os.access(base, os.W_OK) else 0
    for controller in _V1:
        if not os.access(os.path.join(_ROOT, controller) + _own(controller), os.W_OK):
            return 0
    return 1


def available() -> str:
    """ "" when limits can be set here, else why not (said at start)."""
    found = version()
    if found:
        return ""
    if os.path.exists(os.path.join(_ROOT, "cgroup.controllers")):
        return "cgroup v2 is mounted but this process's group is not writable"
    return "no writable cgroup (v2, or v1 memory, pids and cpu)"


class Group:
    """One isolated process tree's groups (one per v1 controller, or one v2 group)."""

    def __init__(self, name: str, limits: Limits) -> None:
        self.version = version()
        self.limits = limits
        self.paths: list[str] = []
        if self.version == 2:
            path = f"{_ROOT}{_own('').rstrip('/')}/shoal-{name}"
            os.makedirs(path, exist_ok=True)
            self.paths = [path]
            if limits.memory is not None:
                _write(path, "memory.max", str(limits.memory))
                _write(path, "memory.swap.max", "0", quiet=True)
            if limits.pids is not None:
                _write(path, "pids.max", str(limits.pids))
            if limits.cpu is not None:
                _write(path, "cpu.max", f"{int(limits.cpu * _PERIOD)} {_PERIOD}")
        elif self.version == 1:
            for controller in _V1:
                path = f"{_ROOT}/{controller}{_own(controller).rstrip('/')}/shoal-{name}"
                os.makedirs(path, exist_ok=True)
                self.paths.append(path)
                if controller == "memory" and limits.memory is not None:
                    _write(path, "memory.limit_in_bytes", str(limits.memory))
                    _write(path, "memory.memsw.limit_in_bytes", str(limits.memory), quiet=True)
                elif controller == "pids" and limits.pids is not None:
                    _write(path, "pids.max", str(limits.pids))
                elif controller == "cpu" and limits.cpu is not None:
                    _write(path, "cpu.cfs_period_us", str(_PERIOD))
                    _write(path, "cpu.cfs_quota_us", str(int(limits.cpu * _PERIOD)))

    @property
    def procs(self) -> list[str]:
        """The files a process writes its pid to, to join every group."""
        return [os.path.join(path, "cgroup.procs") for path in self.paths]

    def oom_killed(self) -> bool:
        """Whether the kernel killed a process of the group for going over its memory."""
        if self.version == 2 and self.paths:
            return _count(os.path.join(self.paths[0], "memory.events"), "oom_kill") > 0
        if self.version == 1 and self.limits.memory is not None:
            path = self.paths[0]
            if _count(os.path.join(path, "memory.oom_control"), "oom_kill") > 0:
                return True
            return _number(os.path.join(path, "memory.failcnt")) > 0 and (
                _number(os.path.join(path, "memory.max_usage_in_bytes"))
                >= self.limits.memory - (1 << 20)
            )
        return False

    def memory_bytes(self) -> int:
        """What the group uses now (0 where not known)."""
        if self.version == 2 and self.paths:
            return _number(os.path.join(self.paths[0], "memory.current"))
        if self.version == 1 and self.paths:
            return _number(os.path.join(self.paths[0], "memory.usage_in_bytes"))
        return 0

    def kill_all(self) -> None:
        """SIGKILL every process still in the group (v2: cgroup.kill; v1: each pid)."""
        if self.version == 2 and self.paths:
            _write(self.paths[0], "cgroup.kill", "1", quiet=True)
            return
        for pid in _pids(self.paths[0]) if self.paths else ():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, 9)

    def remove(self, wait: float = 2.0) -> bool:
        """Kill what is left and remove the groups; False if one could not be removed
        within ``wait`` seconds (a process in it would not die)."""
        deadline = time.monotonic() + wait
        removed = True
        for path in self.paths:
            while True:
                self.kill_all()
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        removed = False
                        break
                    time.sleep(0.01)
        return removed


def _write(path: str, name: str, value: str, quiet: bool = False) -> None:
    try:
        with open(os.path.join(path, name), "w") as out:
            out.write(value)
    except OSError:
        if not quiet:
            raise


def _number(path: str) -> int:
    try:
        with open(path) as found:
            text = found.read().split()
        return int(text[0]) if text and text[0].isdigit() else 0
    except OSError:
        return 0


def _count(path: str, key: str) -> int:
    try:
        with open(path) as found:
            for line in found:
                name, _, value = line.partition(" ")
                if name == key:
                    return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _pids(path: str) -> list[int]:
    try:
        with open(os.path.join(path, "cgroup.procs")) as found:
            return [int(line) for line in found if line.strip()]
    except OSError:
        return []
