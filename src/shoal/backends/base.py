"""The interface every backend implements: start, stop and list containers.

A backend only decides where a container process runs. The process is always
``python -m shoal.container ADDRESS CONTAINER_ID`` with the container's own token in
its environment; it connects back to the control plane on its own, so a backend
knows nothing of inputs, pools or the protocol.

A launch names what it runs by digest, never by a path on the control plane's
machine: the image by its recipe's digest (the backend built it, see
:meth:`Backend.build_image`), the code by its bundle's SHA-256. A backend, or the
container itself, finds a bundle already unpacked in its machine's
:attr:`Backend.bundle_cache` or gets its bytes through :attr:`Backend.fetch`, so a
container on another machine can start from a launch alone.
"""

from __future__ import annotations

import abc
import functools
import os
import shutil
import subprocess
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from shoal.exception import InvalidError
from shoal.spec.image import Environment, Recipe
from shoal.spec.resources import Grant, Machine, Resources

__all__ = ["Backend", "ContainerLaunch", "Machine", "Preload", "this_machine"]


@dataclass(frozen=True, kw_only=True)
class Preload:
    """The user's module, which a backend may import ahead of time (a fork server).

    The fields mean what :class:`~shoal.protocol.messages.Load`'s do; a
    ``module_kind`` of ``"serialized"`` means there is no module to import.
    """

    module_kind: str
    module_name: str
    module_file: str
    sys_path: tuple[str, ...]
    #: The digest of the image the containers run in ("": this process's interpreter).
    image: str = ""
    #: The code bundle the paths are relative to ("": none; see CodeRef.bundle).
    bundle: str = ""


@dataclass(frozen=True, kw_only=True)
class ContainerLaunch:
    """What a backend needs to start one container.

    ``label`` prefixes the container's output lines (``[fetch-c3] ...``).
    ``preload`` names the user's module, for a backend that can load it early.
    """

    container_id: str
    label: str
    address: str
    token: str
    preload: Preload | None = None
    #: Environment variables the container gets on top of the backend's own
    #: (``CUDA_VISIBLE_DEVICES`` for the GPUs it was given).
    env: dict[str, str] = field(default_factory=dict)
    #: The digest of the image the container runs in ("": this process's interpreter).
    image: str = ""
    #: The node it was placed on, and what it holds there (a cluster backend starts it
    #: on that node and holds the room in the cluster's books too).
    node: str = ""
    grant: Grant | None = None
    #: The most it may use (the function's ``cpu=(request, limit)`` and
    #: ``memory=(request, limit)``, in cores and MiB; None: no limit): a backend that
    #: isolates holds it to them (cgroups), one that does not may ignore them.
    cpu_limit: float | None = None
    memory_limit: int | None = None


def this_machine() -> Machine:
    """The cores this process may run on, its machine's memory, and its NVIDIA GPUs."""
    cores = float(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
    memory = 0
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemTotal:"):
                    memory = int(line.split()[1]) // 1024
                    break
    except OSError:
        memory = 1024
    return Machine(cores, memory, _nvidia_gpus())


@functools.cache
def _nvidia_gpus() -> tuple[tuple[int, str], ...]:
    """The machine's NVIDIA GPUs from ``nvidia-smi``; none when it is missing or fails.

    Asked once per process: every control plane starts with it, and the answer does not
    change while the process runs."""
    tool = shutil.which("nvidia-smi")
    if tool is None:
        return ()
    try:
        listing = subprocess.run(
            [tool, "--query-gpu=index,name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    gpus = []
    for line in listing.splitlines():
        index, _, name = line.partition(",")
        if index.strip().isdigit():
            gpus.append((int(index), name.strip()))
    return tuple(gpus)


#: Called once when a container process has exited, with its id and exit code
#: (``None`` when the backend cannot tell; :data:`MACHINE_LOST` when its machine went).
OnExit = Callable[[str, int | None], None]

#: The exit code a cluster backend reports for a container lost with its node: no fault
#: of the function's (a pool does not count it against the function's starts).
MACHINE_LOST: Final = -(1 << 16)


class MachineLost(OSError):
    """Raised by :meth:`Backend.start` when the node a launch names is gone."""


#: Called with (container id, "stdout" or "stderr", lines) for what a container printed.
OnOutput = Callable[[str, str, list[str]], None]

#: What a container on a server keeps of the server's own environment: what finding
#: programs, libraries, certificates, proxies, locale and time need. Anything else
#: (the operator's tokens, cloud credentials, the server's SHOAL_TOKEN) stays out.
KEPT_VARIABLES: Final = frozenset(
    {
        "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR",
        "TERM", "LD_LIBRARY_PATH", "VIRTUAL_ENV", "PYTHONPATH", "SSL_CERT_FILE",
        "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
        "http_proxy", "https_proxy", "no_proxy",
    }
)  # fmt: skip
#: Shoal's own variables that give a client power over a server (or say where one is):
#: never in a server's containers, which get their own narrow token.
SERVER_VARIABLES: Final = frozenset(
    {
        "SHOAL_TOKEN", "SHOAL_SERVER_URL", "SHOAL_CONFIG", "SHOAL_GATEWAY_TOKEN",
        "SHOAL_HOME", "SHOAL_IMAGE_CACHE",
    }
)  # fmt: skip


def base_environment(inherit: bool) -> dict[str, str]:
    """The environment a container starts from, before its image's variables, its
    secrets and its launch's: this process's whole environment when ``inherit`` (the
    embedded default: the caller's own code, run as the caller), else only
    :data:`KEPT_VARIABLES`, the locale's ``LC_*``, and Shoal's container settings
    (``SHOAL_*`` but :data:`SERVER_VARIABLES`)."""
    if inherit:
        return dict(os.environ)
    return {
        name: value
        for name, value in os.environ.items()
        if name in KEPT_VARIABLES
        or name.startswith("LC_")
        or (name.startswith("SHOAL_") and name not in SERVER_VARIABLES)
    }


#: Takes each line an image build prints, as it comes.
BuildLog = Callable[[str], None]

#: Called with a cluster's nodes (by id) whenever they change.
OnNodes = Callable[[dict[str, Machine]], None]

#: Gets the bytes of what a launch names by digest: ``fetch("bundle", sha256)``.
#:
#: Raises:
#:     NotFoundError: nothing of that kind has that digest.
Fetch = Callable[[str, str], Awaitable[bytes]]


class Backend(abc.ABC):
    """Starts and stops container processes. All methods run on the control loop.

    A backend that relays its containers' output also gives it to
    :attr:`on_output` when one is set (the control plane publishes it on its event bus,
    where the server keeps it for ``shoal app logs``).
    """

    on_output: OnOutput | None = None
    #: Told of the nodes whenever they change (a cluster backend; set by the control plane).
    on_nodes: OnNodes | None = None
    #: Nodes may join (a cluster with an autoscaler): a function that fits on no node
    #: now waits for one instead of being refused.
    elastic: bool = False
    #: All containers run on this one machine: volumes are its folders, and containers
    #: may reach the control plane over a Unix socket.
    one_machine: bool = True
    #: The address containers on other machines reach the control plane at (over TCP).
    host: str = "127.0.0.1"
    #: Whether containers start from this process's whole environment (the embedded
    #: default) or a built one (a server: see :func:`base_environment`).
    inherit_environment: bool = True
    #: Where this backend's machine keeps code bundles unpacked, one folder per digest
    #: (:func:`shoal.protocol.bundle.folder`): a server on this machine unpacks each
    #: deployed bundle there, so its containers find it and fetch nothing.
    bundle_cache: str = ""
    #: How to get a bundle that is not in :attr:`bundle_cache` (set by the control plane).
    fetch: Fetch | None = None
    #: Run each container in a jail (:mod:`shoal.backends.jailed`; set by the server, and
    #: only where :func:`shoal.backends.isolation.problem` finds nothing missing).
    isolated: bool = False
    #: Where containers reach the control plane (set by it once it listens): a jail
    #: holds that socket from its start, before any launch names it.
    control_address: str = ""

    @abc.abstractmethod
    async def start(self, launch: ContainerLaunch, on_exit: OnExit) -> int | None:
        """Start a container; return its pid when the backend knows one.

        ``on_exit`` is called exactly once after the process ends, however it ends.

        Raises:
            OSError: the process could not be started.
        """

    @abc.abstractmethod
    async def stop(self, container_id: str, grace: float) -> None:
        """Wait up to ``grace`` seconds for the container to exit, then kill it.

        Returns once the process has exited and its ``on_exit`` has been called.
        Unknown or exited ids are a no-op.
        """

    @abc.abstractmethod
    def list(self) -> list[str]:
        """Ids of containers started and not yet exited."""

    async def open(self) -> None:
        """Get ready before the first container (attach to a cluster, say).

        Raises:
            ConnectionError: what it runs containers on cannot be reached.
        """
        return None

    def machine(self) -> Machine:
        """The cores, memory and GPUs containers may reserve: this machine's, by default."""
        return this_machine()

    def machines(self) -> dict[str, Machine]:
        """Each node containers may be placed on, by id: this one machine, ``""``."""
        return {"": self.machine()}

    def want(self, shapes: Sequence[Resources]) -> None:
        """Containers of these shapes fit on no node now (one shape each; an empty list:
        none): a cluster backend asks its autoscaler for room."""
        return None

    def rss(self, container_id: str) -> int | None:
        """Resident memory of a running container in MiB, or ``None`` when unknown."""
        return None

    async def prepare(self, preload: Preload) -> None:
        """Get ready to start containers of ``preload``'s module quickly (optional).

        Called once per function when its pool starts; a backend without such a
        trick ignores it. Failures here must not stop containers from starting.
        """
        return None

    async def build_image(self, recipe: Recipe, log: BuildLog) -> Environment:
        """Build ``recipe`` into an environment its containers can start in, handing
        ``log`` each line the build prints.

        Raises:
            ImageBuildError: a step failed (the message ends with its output).
            InvalidError: this backend cannot build images.
        """
        raise InvalidError(f"the {type(self).__name__} backend cannot build images")

    def release(self, preload: Preload) -> None:
        """No pool of ``preload``'s module remains: drop what :meth:`prepare` made for it."""
        return None

    async def close(self) -> None:
        """Kill every container still running and wait for them to exit."""
        for container_id in self.list():
            await self.stop(container_id, 0.0)
