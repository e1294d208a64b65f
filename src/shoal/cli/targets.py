"""What ``shoal run`` runs: a target's app and callable, and the options it takes.

A target names a file or, with ``-m``, a module, then optionally what to run in it::

    app.py                  the only entrypoint (or the only function)
    app.py::main            an entrypoint, or a function by name
    app.py::Model.predict   a method of an ``@app.cls`` class (its default parameters)
    -m pkg.jobs::main       the same, for a module found on the import path

Options after the target become keyword arguments of the callable, converted by
its annotations (``--count 3`` for ``count: int``; ``--verbose/--no-verbose`` for a
``bool``). A parameter without a default is a required option: leaving it out is a
usage error naming it. ``shoal run TARGET --help`` lists the callable's own options.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import sys
import types
import typing
from collections.abc import Callable
from typing import Any

import click

from shoal.client.app import App
from shoal.client.cls import Cls
from shoal.client.function import Function
from shoal.client.user_module import load_file
from shoal.exception import InvalidError

#: Annotation (the type, or its name in a string annotation) -> click parameter type.
_TYPES: dict[Any, click.ParamType[Any]] = {
    int: click.INT,
    float: click.FLOAT,
    str: click.STRING,
    "int": click.INT,
    "float": click.FLOAT,
    "str": click.STRING,
}


def load_target(target: str, as_module: bool) -> tuple[types.ModuleType, str, str]:
    """Import the file or module ``target`` names; return it, the name after ``::``, and
    how to name the target in messages.

    Raises:
        click.UsageError: the file or module cannot be found.
    """
    where, _, name = target.partition("::")
    if not as_module:
        try:
            return load_file(where), name, where
        except InvalidError as exc:
            raise click.UsageError(str(exc)) from None
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` does
    try:
        return importlib.import_module(where), name, where
    except ModuleNotFoundError as exc:
        if exc.name is not None and where.startswith(exc.name):
            raise click.UsageError(f"no module named {where!r} on the import path") from None
        raise


def resolve(namespace: dict[str, Any], name: str, where: str) -> tuple[App, Callable[..., Any]]:
    """The app and the callable (an entrypoint, or a function or method's ``remote``)
    that ``name`` picks in a module's ``namespace``.

    Raises:
        click.UsageError: no app, no such name, or several candidates and no name.
    """
    apps = [v for v in namespace.values() if isinstance(v, App)]
    if not apps:
        raise click.UsageError(f"{where} defines no shoal.App")
    candidates = _candidates(apps)
    if "." in name:
        return _method(apps, name, where)
    if name:
        if name not in candidates:
            raise click.UsageError(
                f"{where} has no entrypoint or function {name!r}; choose from {sorted(candidates)}"
            )
        return candidates[name]
    entrypoints = [(a, e) for a in apps for e in a.registered_entrypoints.values()]
    if len(entrypoints) == 1:
        return entrypoints[0]
    if not entrypoints and len(candidates) == 1:
        return next(iter(candidates.values()))
    raise click.UsageError(
        f"{where} has several candidates; name one: {where}::NAME with NAME in {sorted(candidates)}"
    )


def _candidates(apps: list[App]) -> dict[str, tuple[App, Callable[..., Any]]]:
    found: dict[str, tuple[App, Callable[..., Any]]] = {}
    for app in apps:
        for fname, function in app.registered_functions.items():
            raw = function.__shoal_raw_function__
            found.setdefault(fname, (app, _remote_of(function, raw)))
        for ename, entry in app.registered_entrypoints.items():
            found[ename] = (app, entry)  # entrypoints win over functions
    return found


def _method(apps: list[App], name: str, where: str) -> tuple[App, Callable[..., Any]]:
    """``Cls.method``: the method of an object with the class's default parameters."""
    cls_name, _, method = name.partition(".")
    for app in apps:
        cls: Cls[Any] | None = app.registered_classes.get(cls_name)
        if cls is None:
            continue
        raw = cls.methods.get(method)
        if raw is None:
            raise click.UsageError(
                f"{where}::{cls_name} has no method {method!r}; choose from {sorted(cls.methods)}"
            )
        return app, _remote_of(functools.partial(_method_handle, cls, method), raw, bound=True)
    classes = sorted(c for app in apps for c in app.registered_classes)
    raise click.UsageError(f"{where} has no class {cls_name!r}; its classes are {classes}")


def _method_handle(cls: Cls[Any], method: str) -> Function[Any, Any]:
    handle: Function[Any, Any] = getattr(cls(), method)
    return handle


def _remote_of(
    handle: Function[Any, Any] | Callable[[], Function[Any, Any]],
    raw: Callable[..., Any],
    *,
    bound: bool = False,
) -> Callable[..., Any]:
    """A callable that runs ``handle`` (or the handle it makes, once the app runs) remotely,
    with the signature of ``raw`` (less ``self`` for a method)."""

    def call(**kwargs: Any) -> Any:
        function = handle if isinstance(handle, Function) else handle()
        return function.remote(**kwargs)

    signature = inspect.signature(raw)
    if bound:
        signature = signature.replace(parameters=list(signature.parameters.values())[1:])
    call.__signature__ = signature  # type: ignore[attr-defined]
    call.__doc__ = raw.__doc__
    return call


def options_command(call: Callable[..., Any], usage: str) -> click.Command:
    """A click command whose options are ``call``'s parameters (see the module docstring);
    ``usage`` names it in help and errors (``shoal run app.py::square``)."""
    params: list[click.Parameter] = []
    hints = _hints(call)
    for param in inspect.signature(call).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        params.append(_option(param, hints.get(param.name, param.annotation)))
    doc = inspect.getdoc(call) or None
    return click.Command(usage, params=params, callback=lambda **kw: kw, help=doc)


def _hints(call: Callable[..., Any]) -> dict[str, Any]:
    """``call``'s annotations, resolved where they can be (``from __future__`` strings)."""
    try:
        return typing.get_type_hints(call)
    except Exception:  # an annotation naming something unimportable: read them as written
        return {}


def _option(param: inspect.Parameter, annotation: Any) -> click.Option:
    flag = param.name.replace("_", "-")
    required = param.default is inspect.Parameter.empty
    annotation = _strip_optional(annotation)
    extra: dict[str, Any] = {} if required else {"default": param.default, "show_default": True}
    if annotation in (bool, "bool"):
        return click.Option([f"--{flag}/--no-{flag}", param.name], required=required, **extra)
    choices = typing.get_args(annotation) if typing.get_origin(annotation) is typing.Literal else ()
    if choices and all(isinstance(c, str) for c in choices):
        kind: click.ParamType[Any] = click.Choice(list(choices))
    else:
        kind = _TYPES.get(annotation, click.STRING)
    return click.Option([f"--{flag}", param.name], type=kind, required=required, **extra)


def _strip_optional(annotation: Any) -> Any:
    """``int | None`` and ``Optional[int]`` read as ``int``; a string as its first word."""
    if isinstance(annotation, str):
        return annotation.split("|")[0].strip()
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return annotation


def parse_args(call: Callable[..., Any], args: list[str], usage: str) -> dict[str, Any]:
    """Turn ``--name value`` options into keyword arguments of ``call``.

    Raises:
        click.UsageError: an unknown option, a bad value, or a required one missing (the
            message names it).
    """
    command = options_command(call, usage)
    try:
        parsed: dict[str, Any] = command.main(args, prog_name=usage, standalone_mode=False)
    except click.ClickException as exc:
        raise click.UsageError(
            f"{exc.format_message()} (`{usage} --help` lists its options)"
        ) from None
    return parsed


def print_help(call: Callable[..., Any], usage: str) -> None:
    """Print the options ``call`` takes, as ``shoal run TARGET --help`` shows them."""
    command = options_command(call, usage)
    with click.Context(command, info_name=usage) as ctx:
        click.echo(command.get_help(ctx))
