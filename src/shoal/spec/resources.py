"""What one container reserves on its machine (``cpu=``, ``memory=``, ``gpu=``), and the
machine's room for them.

A function's :class:`Resources` come from Modal's options: ``cpu=1.5`` or a
``(request, limit)`` pair of cores, ``memory=2048`` or a ``(request, limit)``
pair of MiB, ``gpu="any"``, ``"A100"``, ``"H100:2"``. Requests are what a
container reserves: :class:`Room` holds a machine's cores, memory and GPUs and
hands out :class:`Grant`\\ s, so a backend never starts more containers than the
machine can hold. A memory *limit* is enforced while the container runs (see
``Pool``); a CPU limit is recorded but not enforced (that needs cgroups).

Example::

    >>> Resources.coerce(cpu=(1, 2), memory=512, gpu="A100:2")
    Resources(cpu=1.0, cpu_limit=2.0, memory=512, memory_limit=None, gpu_type='A100', gpu_count=2)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from shoal.exception import InvalidError

#: Cores a container reserves when ``cpu=`` is not given (Modal's default).
DEFAULT_CPU: Final = 0.125
#: MiB a container reserves when ``memory=`` is not given (Modal's default).
DEFAULT_MEMORY: Final = 128


@dataclass(frozen=True, kw_only=True)
class Resources:
    """What one container of a function reserves (requests) and may use (limits)."""

    cpu: float = DEFAULT_CPU
    cpu_limit: float | None = None
    memory: int = DEFAULT_MEMORY
    memory_limit: int | None = None
    gpu_type: str | None = None
    gpu_count: int = 0
    #: Custom resources a node must have (a cluster's: ``{"node_a": 1}``), sorted by name.
    custom: tuple[tuple[str, float], ...] = ()

    @classmethod
    def coerce(
        cls,
        *,
        cpu: float | tuple[float, float] | None = None,
        memory: int | tuple[int, int] | None = None,
        gpu: str | None = None,
        custom: Mapping[str, float] | None = None,
    ) -> Resources:
        """Read Modal's ``cpu``, ``memory`` and ``gpu`` options, and the custom resources
        a cluster's nodes offer (``resources={"node_a": 1}``).

        Raises:
            InvalidError: a value is out of range or malformed, naming it.
        """
        cores, core_limit = _pair(cpu, DEFAULT_CPU, "cpu")
        mib, mib_limit = _pair(memory, DEFAULT_MEMORY, "memory")
        if not all(_positive(v) for v in (cores, core_limit or 1.0)):
            raise InvalidError(f"cpu={cpu!r}: cores must be finite numbers > 0")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (mib, mib_limit or 1)):
            raise InvalidError(f"memory={memory!r}: must be whole MiB")
        if mib <= 0:
            raise InvalidError(f"memory={memory!r}: must be > 0 MiB")
        for name, low, high in (("cpu", cores, core_limit), ("memory", mib, mib_limit)):
            if high is not None and high < low:
                raise InvalidError(f"{name}: the limit {high} is below the request {low}")
        gpu_type, gpu_count = _gpu(gpu)
        named = _custom(custom)
        return cls(
            cpu=float(cores),
            cpu_limit=None if core_limit is None else float(core_limit),
            memory=int(mib),
            memory_limit=None if mib_limit is None else int(mib_limit),
            gpu_type=gpu_type,
            gpu_count=gpu_count,
            custom=named,
        )

    def describe(self) -> str:
        """``"1 cores, 512 MiB, 2 x A100 GPU"``: what a container asks for, for errors."""
        text = f"{self.cpu:g} cores, {self.memory} MiB"
        if self.gpu_count:
            text += f", {self.gpu_count} x {self.gpu_type} GPU"
        for name, amount in self.custom:
            text += f", {amount:g} {name}"
        return text


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < math.inf


def _pair(value: object, default: float, name: str) -> tuple[float, float | None]:
    if value is None:
        return default, None
    if isinstance(value, tuple):
        if len(value) != 2:
            raise InvalidError(f"{name}={value!r}: a pair is (request, limit)")
        return value[0], value[1]
    if isinstance(value, int | float):
        return value, None
    raise InvalidError(f"{name}={value!r}: must be a number or a (request, limit) pair")


#: Resource names a custom resource may not take (they mean something already).
_RESERVED: Final = frozenset({"CPU", "GPU", "memory", "object_store_memory", "cpu", "gpu"})


def _custom(custom: Mapping[str, float] | None) -> tuple[tuple[str, float], ...]:
    """``{"node_a": 1}`` -> (("node_a", 1.0),), checked."""
    if not custom:
        return ()
    if not isinstance(custom, Mapping):
        raise InvalidError(f"resources={custom!r}: must map resource names to amounts")
    named = []
    for name, amount in custom.items():
        if not isinstance(name, str) or not name or name in _RESERVED:
            raise InvalidError(
                f"resources: {name!r} is not a custom resource name (cpu, memory and gpu "
                "have options of their own)"
            )
        if not _positive(amount):
            raise InvalidError(f"resources[{name!r}]={amount!r}: must be a number > 0")
        named.append((name, float(amount)))
    return tuple(sorted(named))


def _gpu(gpu: object) -> tuple[str | None, int]:
    """``"H100:2"`` -> ("H100", 2); ``"any"`` -> ("any", 1); ``None`` -> (None, 0)."""
    if gpu is None:
        return None, 0
    if not isinstance(gpu, str) or not gpu.strip():
        raise InvalidError(f"gpu={gpu!r}: must be a GPU type such as 'any', 'A100' or 'H100:2'")
    kind, _, count = gpu.strip().partition(":")
    if count and not (count.isdigit() and 1 <= int(count) <= 8):
        raise InvalidError(f"gpu={gpu!r}: the count after ':' must be 1..8")
    return kind.upper() if kind.lower() != "any" else "any", int(count or 1)


@dataclass(frozen=True)
class Gpu:
    """One GPU of the machine: its index (as CUDA numbers it) and its model name."""

    index: int
    name: str

    def matches(self, kind: str) -> bool:
        """Whether this GPU serves a request for ``kind`` (``"any"`` takes any)."""
        return kind == "any" or kind.replace("-", "").upper() in self.name.replace("-", "").upper()


@dataclass(frozen=True)
class Machine:
    """What one node offers its containers: cores, MiB of memory, GPUs as
    ``(index, model name)`` pairs numbered as ``CUDA_VISIBLE_DEVICES`` numbers them, and
    custom resources by name (a cluster node's)."""

    cpu: float
    memory: int
    gpus: tuple[tuple[int, str], ...] = ()
    custom: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class Grant:
    """Room one container holds: its cores, memory, the GPUs it was given and its custom
    resources, on node ``node`` ("": the one machine)."""

    cpu: float
    memory: int
    gpus: tuple[int, ...] = ()
    node: str = ""
    custom: tuple[tuple[str, float], ...] = ()


@dataclass
class Room:
    """A machine's cores, MiB and GPUs, and what its containers hold of them."""

    cpu: float
    memory: int
    gpus: tuple[Gpu, ...] = ()
    used_cpu: float = 0.0
    used_memory: int = 0
    busy_gpus: set[int] = field(default_factory=set)
    #: Custom resources the node has, and how much of each its containers hold.
    custom: dict[str, float] = field(default_factory=dict)
    used_custom: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, machine: Machine) -> Room:
        """An empty room the size of ``machine``."""
        gpus = tuple(Gpu(index, name) for index, name in machine.gpus)
        return cls(machine.cpu, machine.memory, gpus, custom=dict(machine.custom))

    def could_hold(self, need: Resources) -> bool:
        """Whether one container needing ``need`` fits here when nothing else runs."""
        try:
            self.check(need, "")
        except InvalidError:
            return False
        return True

    def check(self, need: Resources, name: str) -> None:
        """Refuse a function no container of which could ever fit here.

        Raises:
            InvalidError: it asks for more than the whole machine has.
        """
        if need.gpu_count:
            fitting = [g for g in self.gpus if g.matches(need.gpu_type or "any")]
            if len(fitting) < need.gpu_count:
                have = ", ".join(sorted({g.name for g in self.gpus})) or "no GPU"
                raise InvalidError(
                    f"{name} asks for {need.gpu_count} {need.gpu_type} GPU(s); this machine has "
                    f"{len(fitting)} that match ({have})"
                )
        if need.cpu > self.cpu or need.memory > self.memory:
            raise InvalidError(
                f"{name} asks for {need.describe()} per container; this machine has "
                f"{self.cpu:g} cores and {self.memory} MiB"
            )
        for resource, amount in need.custom:
            if self.custom.get(resource, 0.0) < amount:
                raise InvalidError(
                    f"{name} asks for {amount:g} {resource} per container; this machine has "
                    f"{self.custom.get(resource, 0.0):g} (custom resources come from a "
                    "cluster's nodes)"
                )

    def take(self, need: Resources, node: str = "") -> Grant | None:
        """Reserve room for one container, or ``None`` while there is not enough free;
        the grant names ``node``, the node this room is."""
        cpu_full = self.used_cpu + need.cpu > self.cpu + 1e-9
        if cpu_full or self.used_memory + need.memory > self.memory:
            return None
        for resource, amount in need.custom:
            if self.used_custom.get(resource, 0.0) + amount > self.custom.get(resource, 0.0):
                return None
        gpus: tuple[int, ...] = ()
        if need.gpu_count:
            free = [
                g.index
                for g in self.gpus
                if g.index not in self.busy_gpus and g.matches(need.gpu_type or "any")
            ]
            if len(free) < need.gpu_count:
                return None
            gpus = tuple(free[: need.gpu_count])
            self.busy_gpus.update(gpus)
        self.used_cpu += need.cpu
        self.used_memory += need.memory
        for resource, amount in need.custom:
            self.used_custom[resource] = self.used_custom.get(resource, 0.0) + amount
        return Grant(need.cpu, need.memory, gpus, node, need.custom)

    def give_back(self, grant: Grant) -> None:
        """A container that held ``grant`` is gone."""
        self.used_cpu = max(0.0, self.used_cpu - grant.cpu)
        self.used_memory = max(0, self.used_memory - grant.memory)
        self.busy_gpus.difference_update(grant.gpus)
        for resource, amount in grant.custom:
            self.used_custom[resource] = max(0.0, self.used_custom.get(resource, 0.0) - amount)
