"""Loads the user's code inside a container, the counterpart of the caller's CodeRef.

The caller's ``__main__`` is loaded under ``MAIN_MODULE_ALIAS`` (so its
``if __name__ == "__main__":`` block does not run) and aliased as ``__main__``,
so objects the caller pickled from its script unpickle here.

What a container runs is a :class:`UserCode`: for a function, the function under
the name ``""`` (for a web endpoint, the ASGI app built from it); for an
``@app.cls`` class, an instance built with the caller's parameters, its
``@shoal.method()`` methods by name (its web endpoint methods as ASGI apps), and its
``@shoal.enter()`` and ``@shoal.exit()`` hooks.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import pickle
import sys
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from shoal.protocol import markers
from shoal.protocol.messages import MAIN_MODULE_ALIAS, Load


class LoadError(Exception):
    """The function could not be loaded; the message says why, for the caller."""


@dataclass
class UserCode:
    """The callables one container serves, and its lifecycle hooks (bound, in order)."""

    methods: dict[str, Callable[..., Any]]
    enter: list[Callable[..., Any]] = field(default_factory=list)
    exit: list[Callable[..., Any]] = field(default_factory=list)
    #: The names in ``methods`` that are web endpoints: each an ASGI app, every input of
    #: it one request (``""`` for a web function; a class's web methods by name).
    web: set[str] = field(default_factory=set)


def load_user_code(load: Load) -> UserCode:
    """Import the user's code and return what this container serves.

    Raises:
        LoadError: the function or class is not in the module, or the class
            cannot be built (its import errors propagate as they are, so the
            caller sees the real traceback).
    """
    target = _find(load)
    if not isinstance(target, type):
        code = UserCode(methods={"": target})
        web = getattr(target, markers.WEB, None)
        if isinstance(web, dict):
            _serve(code, "", target, web)
        return code
    parameters = pickle.loads(load.parameters) if load.parameters else {}
    return _instantiate(target, parameters)


def _find(load: Load) -> Any:
    if load.module_kind == "serialized":
        _extend_path(load.sys_path)
        assert load.serialized is not None
        return _unwrap(pickle.loads(load.serialized))
    module = load_module(load.module_kind, load.module_name, load.module_file, load.sys_path)
    obj: Any = module
    for part in load.qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise LoadError(
                f"{load.qualname!r} not found in module {load.module_name!r} "
                f"({load.module_file}); define it at module level or use serialized=True"
            ) from None
    return _unwrap(obj)


def _instantiate(cls: type, parameters: dict[str, Any]) -> UserCode:
    """Build the instance without calling ``__init__`` (parameters are set as attributes)."""
    instance: Any = object.__new__(cls)
    for name, value in parameters.items():
        setattr(instance, name, value)
    for name, member in inspect.getmembers(cls):
        if getattr(member, markers.PARAMETER, False) is True and name not in parameters:
            if member.required:  # a caller that looked the class up by name left it out
                raise LoadError(f"{cls.__name__} needs parameter {name!r}")
            setattr(instance, name, member.default)
    code = UserCode(methods={})
    served = getattr(cls, markers.WEB, None)
    if isinstance(served, dict):  # the class's own server (experimental.http_server)
        _serve(code, "", _started_by_enter, served)
    for name, member in inspect.getmembers(cls):
        if name != markers.WEB:
            _add_member(code, name, member, instance)
    return code


def _add_member(code: UserCode, name: str, member: Any, instance: Any) -> None:
    """Give ``code`` what class member ``name`` is to a container, if anything."""
    role = getattr(member, markers.ROLE, None)
    web = getattr(member, markers.WEB, None)
    if isinstance(web, dict):  # served as an endpoint of the class's containers
        _serve(code, name, getattr(instance, name), web)
    elif markers.is_method(member):
        code.methods[name] = getattr(instance, name)
    elif role == markers.ENTER:
        code.enter.append(getattr(instance, name))
    elif role == markers.EXIT:
        code.exit.append(getattr(instance, name))


def _serve(code: UserCode, name: str, fn: Callable[..., Any], web: dict[str, Any]) -> None:
    from shoal.container.web import build_app

    code.methods[name] = build_app(fn, web)
    code.web.add(name)


def _started_by_enter() -> None:
    """A class's ``http_server`` is started by its enter hooks; nothing more to start."""


def load_module(kind: str, name: str, file: str, sys_path: Sequence[str]) -> types.ModuleType:
    """Import the user's module the way the caller knows it (see the module docstring).

    A module already loaded (by the fork server, before this container was
    forked from it) is reused. A module whose import fails leaves nothing behind
    in ``sys.modules``, so a later attempt runs it again.
    """
    _extend_path(sys_path)
    if kind == "import":
        return importlib.import_module(name)
    alias = MAIN_MODULE_ALIAS if kind == "main" else name
    loaded = sys.modules.get(alias)
    if loaded is not None and getattr(loaded, "__file__", None) == file:
        return loaded
    spec = importlib.util.spec_from_file_location(alias, file)
    if spec is None or spec.loader is None:
        raise LoadError(f"cannot load {file!r} as a module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[alias] = module
    previous_main = sys.modules.get("__main__")
    if kind == "main":
        sys.modules["__main__"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(alias, None)
        if kind == "main" and previous_main is not None:
            sys.modules["__main__"] = previous_main
        raise
    return module


def _extend_path(entries: Sequence[str]) -> None:
    for entry in reversed(entries):
        if entry not in sys.path:
            sys.path.insert(0, entry)


def _unwrap(obj: Any) -> Any:
    """Return the user's function or class from a Shoal handle, or ``obj`` itself."""
    raw = getattr(obj, markers.RAW, obj)
    if not callable(raw):
        raise LoadError(f"{obj!r} is not callable")
    return raw
