"""``shoal deploy``: an app's code as a bundle and its definitions, sent to a server.

The bundle holds the app's file and every module it imported from the app's
folder (its local packages too), named relative to that folder; installed
packages are not shipped (the server's environment has its own). Each
definition's :class:`~shoal.spec.function.CodeRef` is rewritten relative to the
bundle, so containers load the code from the server's copy, never from the
deploying machine's paths.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shoal.bridge import run_sync
from shoal.client.connection import connect
from shoal.client.user_module import code_ref, import_root, local_files
from shoal.client.web import web_spec
from shoal.exception import InvalidError
from shoal.protocol import bundle
from shoal.protocol.markers import is_method
from shoal.spec.function import CodeRef, Definition, FunctionSpec, dump_definitions

if TYPE_CHECKING:
    from shoal.client.app import App


def definitions(app: App, folder: str) -> list[Definition]:
    """What the server needs to run and look up each of ``app``'s functions and classes."""
    found = []
    for name, function in app.registered_functions.items():
        raw = function.__shoal_raw_function__
        web = web_spec(raw)
        info = {
            "kind": "function",
            "generator": function.is_generator,
            "web": dict(web) if web else None,
        }
        code = relative(code_ref(raw, serialized=function.serialized), folder)
        found.append(Definition(name, function.spec, code, info))
    for name, cls in app.registered_classes.items():
        raw_cls = cls.__shoal_raw_function__
        methods = {
            method: inspect.isgeneratorfunction(member) or inspect.isasyncgenfunction(member)
            for method, member in inspect.getmembers(raw_cls)
            if is_method(member)
        }
        info = {
            "kind": "class",
            "methods": methods,
            "parameters": sorted(cls.parameters),
            "web": cls.web_methods.get(""),  # the class's own server, if it has one
            "web_methods": {m: dict(spec) for m, spec in cls.web_methods.items() if m},
        }
        code = relative(code_ref(raw_cls, serialized=cls.serialized), folder)
        found.append(Definition(name, cls.spec, code, info))
    return found


def declared(spec: FunctionSpec, code: CodeRef, folder: str) -> Definition:
    """The definition of a pool a running app declares as it goes: a ``with_options``
    variant, or an object of a class with its parameters in ``code``."""
    kind = "class" if code.parameters or _is_class(code) else "function"
    info = {"kind": kind, "generator": False, "web": None, "parameters": [], "methods": {}}
    return Definition(spec.name, spec, relative(code, folder), info)


def _is_class(code: CodeRef) -> bool:
    module = sys.modules.get(code.module_name)
    target: object = module
    for part in code.qualname.split("."):
        target = getattr(target, part, None)
    return isinstance(target, type)


def code_folder(app: App) -> str:
    """The folder an app's code travels from: where its module's import starts (the
    top of its package), or the folder of its file."""
    raws: list[Any] = [f.__shoal_raw_function__ for f in app.registered_functions.values()]
    raws += [c.__shoal_raw_function__ for c in app.registered_classes.values()]
    for raw in raws:
        try:
            code = code_ref(raw, serialized=False)
        except InvalidError:
            continue  # a serialized function: it travels pickled, not from a folder
        if code.module_kind == "import":
            root = import_root(code.module_name, Path(code.module_file))
            if root is not None:
                return root
        if code.module_file:
            return str(Path(code.module_file).parent)
    return os.getcwd()


def relative(code: CodeRef, folder: str) -> CodeRef:
    """``code`` with paths under ``folder`` made relative, and others dropped; with no
    ``folder`` (the embedded server, which runs the code where it is), ``code`` as is."""
    if not folder:
        return code
    module_file = code.module_file
    if module_file and Path(module_file).is_relative_to(folder):
        module_file = os.path.relpath(module_file, folder)
    path = tuple(
        os.path.relpath(p, folder)
        for p in code.sys_path
        if Path(p).resolve().is_relative_to(folder)
    )
    return dataclasses.replace(code, module_file=module_file, sys_path=path)


def pack_folder(folder: str) -> bytes:
    """The bundle of the modules loaded from ``folder``: the app and its local imports."""
    root = Path(folder).resolve()
    files = local_files(root)
    return bundle.pack({Path(f).relative_to(root).as_posix(): f for f in files})


def deploy(app: App, path: str, name: str | None = None) -> dict[str, Any]:
    """Deploy ``app`` (loaded from ``path``) as ``name`` (default: the app's name).

    Returns:
        The server's answer: ``version`` and the URL of each web endpoint.

    Raises:
        InvalidError: the app has no name, or the server refused the deployment.
        ConnectionError: no server runs (``shoal server`` starts one).
    """
    app_name = name or app.name
    if not app_name:
        raise InvalidError("the app has no name: give shoal.App a name, or --name")
    folder = str(Path(path).resolve().parent)
    body = {
        "app": app_name,
        "bundle": pack_folder(folder),
        "definitions": dump_definitions(definitions(app, folder)),
        "client": f"{socket.gethostname()} pid {os.getpid()}",
    }

    async def send() -> dict[str, Any]:
        connection = await connect()
        answer: dict[str, Any] = await connection.request("deploy", **body)
        return answer

    return run_sync(send())
