"""``shoal deploy``: an app's code as a bundle and its definitions, sent to a server.

The bundle holds the app's file and every module it imported from the app's
folder (its local packages too), named relative to that folder; installed
packages are not shipped (the server's environment has its own). Each
definition's :class:`~shoal.control.spec.CodeRef` is rewritten relative to the
bundle, so containers load the code from the server's copy, never from the
deploying machine's paths.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import socket
from pathlib import Path
from typing import Any

from shoal.client.app import App
from shoal.client.bridge import run_sync
from shoal.client.connection import connect
from shoal.client.user_module import code_ref, local_files
from shoal.client.web import web_spec
from shoal.control.spec import CodeRef, Definition, dump_definitions
from shoal.exception import InvalidError
from shoal.protocol import bundle
from shoal.protocol.markers import is_method


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
            "web": None,
        }
        code = relative(code_ref(raw_cls, serialized=cls.serialized), folder)
        found.append(Definition(name, cls.spec, code, info))
    return found


def relative(code: CodeRef, folder: str) -> CodeRef:
    """``code`` with paths under ``folder`` made relative, and others dropped."""
    module_file = code.module_file
    if module_file and Path(module_file).is_relative_to(folder):
        module_file = os.path.relpath(module_file, folder)
    path = tuple(
        os.path.relpath(p, folder)
        for p in code.sys_path
        if Path(p).resolve().is_relative_to(folder)
    )
    return dataclasses.replace(code, module_file=module_file, sys_path=path)


def pack_app(path: str) -> bytes:
    """The bundle of the app loaded from ``path``: it and its local modules."""
    folder = Path(path).resolve().parent
    files = local_files(folder)
    return bundle.pack({Path(f).relative_to(folder).as_posix(): f for f in files})


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
        "bundle": pack_app(path),
        "definitions": dump_definitions(definitions(app, folder)),
        "client": f"{socket.gethostname()} pid {os.getpid()}",
    }

    async def send() -> dict[str, Any]:
        connection = await connect()
        answer: dict[str, Any] = await connection.request("deploy", **body)
        return answer

    return run_sync(send())
