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

import atexit
import contextlib
import functools
import itertools
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


@functools.cache
def _own(controller: str) -> str:
    """This process's group in hierarchy ``controller`` ("" for v2's), from /proc."""
    with open("/proc/self/cgroup") as found:
        for line in found:
            _, names, path = line.rstrip("\n").split(":", 2)
            if names.split(",") == [controller] or (controller == "" and names == ""):
                return path
    return "/"


@functools.cache
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
        self.name = name
        self.limits = limits
        self.paths: list[str] = []
        self._oom_base = 0
        if self.version == 2:
            self.paths = [f"{_ROOT}{_own('').rstrip('/')}/shoal-{name}"]
        elif self.version == 1:
            self.paths = [
                f"{_ROOT}/{controller}{_own(controller).rstrip('/')}/shoal-{name}"
                for controller in _V1
            ]
        for path in self.paths:
            os.makedirs(path, exist_ok=True)
        self.apply(limits)

    def apply(self, limits: Limits) -> None:
        """Set ``limits`` (None: no limit of that kind), and count out-of-memory kills
        from now on (a group is reused: see :class:`Pool`)."""
        self.limits = limits
        memory = str(limits.memory) if limits.memory is not None else "max"
        pids = str(limits.pids) if limits.pids is not None else "max"
        if self.version == 2:
            path = self.paths[0]
            _write(path, "memory.max", memory)
            _write(path, "memory.swap.max", "0", quiet=True)
            _write(path, "pids.max", pids)
            quota = f"{int(limits.cpu * _PERIOD)}" if limits.cpu is not None else "max"
            _write(path, "cpu.max", f"{quota} {_PERIOD}", quiet=True)
        elif self.version == 1:
            memory_path, pids_path, cpu_path = self.paths
            v1_memory = memory if limits.memory is not None else "-1"
            _write(memory_path, "memory.memsw.limit_in_bytes", "-1", quiet=True)
            _write(memory_path, "memory.limit_in_bytes", v1_memory)
            _write(memory_path, "memory.memsw.limit_in_bytes", v1_memory, quiet=True)
            _write(memory_path, "memory.max_usage_in_bytes", "0", quiet=True)
            _write(memory_path, "memory.failcnt", "0", quiet=True)
            _write(pids_path, "pids.max", pids)
            _write(cpu_path, "cpu.cfs_period_us", str(_PERIOD))
            quota = str(int(limits.cpu * _PERIOD)) if limits.cpu is not None else "-1"
            _write(cpu_path, "cpu.cfs_quota_us", quota)
        self._oom_base = self._oom_kills()

    def _oom_kills(self) -> int:
        if not self.paths:
            return 0
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        return _count(os.path.join(self.paths[0], name), "oom_kill")

    def vacate(self, wait: float = 2.0) -> bool:
        """Kill every process in it and wait (up to ``wait`` seconds) until none is left;
        whether it is empty."""
        deadline = time.monotonic() + wait
        while True:
            self.kill_all()
            if not self.paths or not _pids(self.paths[0]):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)

    @property
    def procs(self) -> list[str]:
        """The files a process writes its pid to, to join every group."""
        return [os.path.join(path, "cgroup.procs") for path in self.paths]

    def oom_killed(self) -> bool:
        """Whether the kernel killed a process of the group for going over its memory
        (since its limits were last set)."""
        if self._oom_kills() > self._oom_base:
            return True
        if self.version == 1 and self.limits.memory is not None and self.paths:
            path = self.paths[0]  # kernels without an oom_kill count: it hit its limit
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
        self.vacate(wait)
        removed = True
        for path in self.paths:
            try:
                os.rmdir(path)
            except FileNotFoundError:
                pass
            except OSError:
                removed = False
        return removed


class Pool:
    """Groups kept for reuse. A process's first allocations in a group made moments ago
    are slow (cgroup v1 builds the group's kernel caches then): about 10 ms of a sandbox's
    start here, which a reused group does not pay. At most ``keep`` idle groups are
    kept; each is emptied and its limits set anew before it is used again."""

    def __init__(self, keep: int = 16) -> None:
        self._keep = keep
        self._free: list[Group] = []
        self._made = itertools.count(1)
        if keep:
            sweep()
            atexit.register(self.close)

    def take(self, limits: Limits) -> Group:
        while self._free:
            group = self._free.pop()
            try:
                group.apply(limits)
                return group
            except OSError:  # removed under us: make another
                group.remove(0)
        return Group(f"pool-{os.getpid()}-{next(self._made)}", limits)

    def give(self, group: Group) -> None:
        """Take back ``group``, whose processes should all be gone (blocks briefly)."""
        if group.vacate() and len(self._free) < self._keep:
            self._free.append(group)
        else:
            group.remove()

    def close(self) -> None:
        """Remove every idle group."""
        while self._free:
            self._free.pop().remove(0.5)


def sweep() -> None:
    """Remove the empty groups that pools of processes no longer running left behind
    (a server that was killed keeps no promise to remove them)."""
    if not version():
        return
    controllers = [""] if version() == 2 else list(_V1)
    for controller in controllers:
        parent = os.path.join(_ROOT, controller) + _own(controller).rstrip("/")
        try:
            names = os.listdir(parent)
        except OSError:
            continue
        for name in names:
            owner = name.split("-")[2] if name.startswith("shoal-pool-") else ""
            if owner.isdigit() and not os.path.exists(f"/proc/{owner}"):
                with contextlib.suppress(OSError):  # not empty: something still runs there
                    os.rmdir(os.path.join(parent, name))


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
