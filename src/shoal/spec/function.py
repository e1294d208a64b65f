"""Validated options of a function: scaling parameters, retries, timeout.

Every user-facing option lands here as a frozen, keyword-only dataclass checked
on construction, so a bad value fails where it was written, naming the value and
the range allowed. The autoscaler imports this module and nothing else of Shoal.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import io
import math
import os
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from shoal.exception import InvalidError
from shoal.spec.image import Recipe
from shoal.spec.resources import Resources
from shoal.spec.schedule import Schedule
from shoal.spec.secrets import SecretSpec


class _Unset(enum.Enum):
    UNSET = "UNSET"


#: Marks an option that was not given, where ``None`` has a meaning of its own
#: (``max_containers=None`` is "no limit").
UNSET: Final = _Unset.UNSET

#: Retries after a container died under an input, on top of ``retries``.
INFRA_RETRIES: Final = 3


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise InvalidError(message)


@dataclass(frozen=True, kw_only=True)
class Retries:
    """How to re-run an input whose function raised.

    The n-th retry (1-based) waits ``initial_delay * backoff_coefficient ** (n-1)``
    seconds, at most ``max_delay``.
    """

    max_retries: int
    backoff_coefficient: float = 2.0
    initial_delay: float = 1.0
    max_delay: float = 60.0

    def __post_init__(self) -> None:
        _check(0 <= self.max_retries <= 10, f"max_retries={self.max_retries!r}: must be 0..10")
        _check(
            1.0 <= self.backoff_coefficient <= 10.0,
            f"backoff_coefficient={self.backoff_coefficient!r}: must be 1.0..10.0",
        )
        _check(
            0.0 <= self.initial_delay <= 60.0,
            f"initial_delay={self.initial_delay!r}: must be 0..60 seconds",
        )
        _check(
            self.initial_delay <= self.max_delay <= 60.0,
            f"max_delay={self.max_delay!r}: must be initial_delay..60 seconds",
        )

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1-based)."""
        return min(self.max_delay, self.initial_delay * self.backoff_coefficient ** (retry - 1))

    @classmethod
    def coerce(cls, value: int | Retries | None) -> Retries:
        """Accept ``retries=3`` as shorthand for ``Retries(max_retries=3)`` (no delay)."""
        if value is None:
            return cls(max_retries=0)
        if isinstance(value, Retries):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return cls(max_retries=value, initial_delay=0.0, max_delay=0.0)
        raise InvalidError(f"retries={value!r}: must be an int or shoal.Retries")


@dataclass(frozen=True, kw_only=True)
class Scaling:
    """The parameters of DESIGN section 1 that size a function's pool.

    ``target_inputs=None`` means "the same as max_inputs";
    ``max_containers=None`` means "no limit".
    """

    max_inputs: int = 1
    target_inputs: int | None = None
    max_containers: int | None = None
    min_containers: int = 0
    buffer_containers: int = 0
    scaledown_window: float = 60.0
    #: Inputs per container the autoscaler sizes for: ``target_inputs``, or ``max_inputs``
    #: when that is None (worked out once: the policy reads it at every decision).
    target: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check(
            _is_int(self.max_inputs) and self.max_inputs >= 1,
            f"max_inputs={self.max_inputs!r}: must be an int >= 1",
        )
        target = self.target_inputs
        _check(
            target is None or (_is_int(target) and 1 <= target <= self.max_inputs),
            f"target_inputs={target!r}: must be an int in 1..max_inputs ({self.max_inputs})",
        )
        _check(
            _is_int(self.min_containers) and self.min_containers >= 0,
            f"min_containers={self.min_containers!r}: must be an int >= 0",
        )
        top = self.max_containers
        _check(
            top is None or (_is_int(top) and top >= max(1, self.min_containers)),
            f"max_containers={top!r}: must be None or an int >= max(1, min_containers)",
        )
        _check(
            _is_int(self.buffer_containers) and self.buffer_containers >= 0,
            f"buffer_containers={self.buffer_containers!r}: must be an int >= 0",
        )
        window = self.scaledown_window
        _check(
            isinstance(window, int | float) and math.isfinite(window) and window > 0,
            f"scaledown_window={window!r}: must be a number of seconds > 0",
        )
        object.__setattr__(self, "target", self.max_inputs if target is None else target)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True, kw_only=True)
class FunctionSpec:
    """Everything the control plane needs to know about one function."""

    name: str
    scaling: Scaling = field(default_factory=Scaling)
    timeout: float = 300.0
    retries: Retries = field(default_factory=lambda: Retries(max_retries=0))
    #: Fire the function on this schedule while its app runs (``shoal.Period``/``Cron``).
    schedule: Schedule | None = None
    #: What each container reserves on its machine (``cpu=``, ``memory=``, ``gpu=``).
    resources: Resources = field(default_factory=Resources)
    #: The image its containers run in (None: the caller's own environment).
    image: Recipe | None = None
    #: Environment variables of its containers (``secrets=[...]``).
    secrets: tuple[SecretSpec, ...] = ()
    #: Its containers' volumes: (path in the container, volume name, create if missing).
    volumes: tuple[tuple[str, str, bool], ...] = ()

    def __post_init__(self) -> None:
        _check(
            isinstance(self.timeout, int | float) and 0 < self.timeout <= 86400,
            f"timeout={self.timeout!r}: must be 0 < seconds <= 86400",
        )


@dataclass(frozen=True, kw_only=True)
class CodeRef:
    """Where a container finds the user's function.

    ``qualname`` names a function or an ``@app.cls`` class. ``module_kind`` is
    ``"import"`` (import ``module_name``), ``"file"`` (load
    ``module_file`` under ``module_name``), ``"main"`` (load the caller's script
    without running its ``__main__`` block) or ``"serialized"`` (unpickle
    ``serialized``). ``sys_path`` is the caller's import path, put first in the
    container's so the user's own modules import the same way.

    With a ``bundle`` (the SHA-256 of a deployed app's code bundle), ``module_file``
    and the relative ``sys_path`` entries are relative to where that bundle is
    unpacked, which differs from machine to machine (:func:`locate`); without one
    they are paths on the caller's machine.
    """

    module_kind: str
    module_name: str
    module_file: str
    sys_path: tuple[str, ...]
    qualname: str
    serialized: bytes | None = None
    #: For a class: its pickled ``shoal.parameter()`` values.
    parameters: bytes = b""
    #: The code bundle the paths are relative to ("": none, they are the caller's).
    bundle: str = ""


def locate(
    module_kind: str, module_file: str, sys_path: Sequence[str], root: str
) -> tuple[str, tuple[str, ...]]:
    """A bundle-relative ``module_file`` and ``sys_path`` made absolute under ``root``,
    the folder the bundle is unpacked in on this machine; ``root`` goes first on the
    path unless it is there already, so the app's own modules import.

    Example::

        >>> locate("file", "app.py", ("lib",), "/b/1f2e")
        ('/b/1f2e/app.py', ('/b/1f2e', '/b/1f2e/lib'))
    """
    if module_kind == "serialized" and not sys_path:
        return module_file, (root,)
    if module_file and not os.path.isabs(module_file):
        module_file = os.path.join(root, module_file)
    path = tuple(
        p if os.path.isabs(p) else os.path.normpath(os.path.join(root, p)) for p in sys_path
    )
    if root not in path:
        path = (root, *path)
    return module_file, path


#: Options ``with_options`` takes: resources, then the rest of a function's options.
_RESOURCE_OPTIONS: Final = ("cpu", "memory", "gpu", "resources")
_SCALING_OPTIONS: Final = (
    "max_containers",
    "min_containers",
    "buffer_containers",
    "scaledown_window",
)


def with_options(spec: FunctionSpec, **given: Any) -> FunctionSpec:
    """``spec`` with Modal's ``with_options`` changes applied, under a name that says them.

    ``with_options(spec, cpu=2, max_containers=3)`` names the copy
    ``"f[cpu=2, max_containers=3]"``: a pool of its own, beside ``f``'s.

    Raises:
        InvalidError: an unknown option, or a value out of range.
    """
    known = {*_RESOURCE_OPTIONS, *_SCALING_OPTIONS, "timeout", "retries", "secrets", "volumes"}
    unknown = sorted(set(given) - known)
    if unknown:
        raise InvalidError(f"with_options() does not take {unknown}; it takes {sorted(known)}")
    if not given:
        return spec
    changes: dict[str, Any] = {}
    if any(option in given for option in _RESOURCE_OPTIONS):
        current = spec.resources
        changes["resources"] = Resources.coerce(
            cpu=given.get("cpu", _pair_of(current.cpu, current.cpu_limit)),
            memory=given.get("memory", _pair_of(current.memory, current.memory_limit)),
            gpu=given.get(
                "gpu", f"{current.gpu_type}:{current.gpu_count}" if current.gpu_count else None
            ),
            custom=given.get("resources", dict(current.custom)),
        )
    scaling = {k: v for k, v in given.items() if k in _SCALING_OPTIONS}
    if scaling:
        changes["scaling"] = dataclasses.replace(spec.scaling, **scaling)
    if "timeout" in given:
        changes["timeout"] = given["timeout"]
    if "retries" in given:
        changes["retries"] = Retries.coerce(given["retries"])
    for key in ("secrets", "volumes"):  # as the client made them (client/options.py)
        if key in given:
            changes[key] = tuple(given[key])
    label = ", ".join(f"{key}={_label(key, given[key])}" for key in sorted(given))
    return dataclasses.replace(spec, name=f"{spec.name}[{label}]", **changes)


def _label(key: str, value: Any) -> str:
    """How option ``key`` shows in a variant's name: secrets by a digest of their
    contents (two variants with different values must differ; no value may show)."""
    if key == "resources" and isinstance(value, Mapping):
        return repr(dict(sorted(value.items())))  # the same resources, the same pool
    if key != "secrets":
        return repr(value)
    contents = repr([(s.name, s.values, s.required_keys) for s in value]).encode()
    return hashlib.sha256(contents).hexdigest()[:8]


def _pair_of(request: Any, limit: Any) -> Any:
    return request if limit is None else (request, limit)


def endpoint_name(name: str, method: str = "") -> str:
    """The name a web endpoint is served under: a function's name, a class's web method
    as ``Cls.method``, a class's own server (``method=""``) as the class's name.

    Example::

        >>> endpoint_name("WebApp", "web"), endpoint_name("Server")
        ('WebApp.web', 'Server')
    """
    return f"{name}.{method}" if method else name


@dataclass(frozen=True)
class Definition:
    """One deployed function or class, as the client described it.

    ``info`` is what a handle found by name needs: ``kind`` ("function" or
    "class"), ``generator`` (bool), ``methods`` (method name -> generator, for a
    class), ``parameters`` (a class's parameter names), ``web`` (the endpoint's
    options, or None).
    """

    name: str
    spec: FunctionSpec
    code: CodeRef
    info: dict[str, Any]


def dump_definitions(definitions: list[Definition]) -> bytes:
    return pickle.dumps(definitions, protocol=pickle.HIGHEST_PROTOCOL)


def load_definitions(data: bytes) -> list[Definition]:
    """Definitions sent by an authenticated client or read back from the store.

    Raises:
        InvalidError: ``data`` is not a list of definitions.
    """
    try:
        found = _Definitions(io.BytesIO(data)).load()
    except Exception as exc:
        raise InvalidError(f"malformed app definitions: {exc!r}") from None
    if not isinstance(found, list) or not all(isinstance(d, Definition) for d in found):
        raise InvalidError("malformed app definitions: expected a list of Definition")
    return found


#: Where these value types lived before ``spec/`` held them: definitions a server stored
#: then still name the old modules.
_MOVED: Final = {
    "shoal.control.spec": "shoal.spec.function",
    "shoal.control.image": "shoal.spec.image",
    "shoal.control.resources": "shoal.spec.resources",
    "shoal.control.schedule": "shoal.spec.schedule",
    "shoal.control.secrets": "shoal.spec.secrets",
}


class _Definitions(pickle.Unpickler):
    """Reads stored definitions, finding classes where they live now."""

    def find_class(self, module: str, name: str) -> Any:
        return super().find_class(_MOVED.get(module, module), name)
