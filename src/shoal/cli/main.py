"""``shoal run FILE[::NAME] [--arg value ...]``: run an app's entrypoint or one function.

``shoal run demo.py`` calls the file's only ``@app.local_entrypoint()`` (or its
only function) inside ``app.run()``; ``demo.py::main`` and ``demo.py::generate``
pick one by name. Options after the target become the entrypoint's keyword
arguments, converted by its annotations (``--count 3`` for ``count: int``).
The command exits non-zero when the entrypoint raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import sys
import traceback
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import click
from rich.console import Console

from shoal.cli import objects, service
from shoal.cli.serve import serve as serve_command
from shoal.client.app import App
from shoal.client.function import Function
from shoal.client.output import live_status
from shoal.client.serving import serving
from shoal.client.user_module import load_file
from shoal.exception import ImageBuildError, InvalidError

#: Annotation -> click parameter type, for entrypoint options.
_TYPES: dict[Any, click.ParamType[Any]] = {
    int: click.INT,
    float: click.FLOAT,
    bool: click.BOOL,
    str: click.STRING,
    "int": click.INT,
    "float": click.FLOAT,
    "bool": click.BOOL,
    "str": click.STRING,
}


@click.group()
@click.version_option(package_name="shoal")
def main() -> None:
    """Shoal: Python functions in autoscaling pools of containers."""


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("target")
@click.option("--quiet", "-q", is_flag=True, help="No live status display.")
@click.option(
    "--detach",
    is_flag=True,
    help="On a server: let the app's inputs finish there after this command ends.",
)
@click.pass_context
def run(ctx: click.Context, target: str, quiet: bool, detach: bool) -> None:
    """Run TARGET (FILE.py or FILE.py::NAME) against an ephemeral app: on the server
    this machine is told to use, or finds running, else in this process."""
    path, _, name = target.partition("::")
    try:
        module = load_file(path)
    except InvalidError as exc:
        raise click.UsageError(str(exc)) from None
    app, call = _resolve(vars(module), name, path)
    kwargs = _parse_args(call, ctx.args)
    console = Console(stderr=True, soft_wrap=True)  # URLs and tokens stay whole
    try:
        with app.run(detach=detach), _served(app, console), _live(app, console, quiet):
            result = call(**kwargs)
            if inspect.isawaitable(result):  # an ``async def`` entrypoint
                result = asyncio.run(_awaited(result))
    except KeyboardInterrupt:
        console.print("[yellow]interrupted; containers stopped[/yellow]")
        sys.exit(130)
    except ImageBuildError as exc:  # its message is the failing step's own output
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    except Exception:
        traceback.print_exc()
        sys.exit(1)
    if result is not None:
        click.echo(result)


main.add_command(serve_command)
for _command in (*service.COMMANDS, *objects.COMMANDS):
    main.add_command(_command)


@contextlib.contextmanager
def _served(app: App, console: Console) -> Iterator[None]:
    """Serve the running app's web endpoints (a server serves them itself) and print
    their URLs."""
    on_server = app.runs_on_server
    if on_server is not None:
        console.print(f"running as {on_server.name} on the server")
        for name, function in app.registered_functions.items():
            url = function.get_web_url()
            if url is not None:
                console.print(f"  {name}: {url}")
        yield
        return
    with serving(app) as served:
        if served is not None:
            console.print(
                f"web endpoints on {served.url} (token for requires_auth: {served.token})"
            )
            for line in served.listing():
                console.print(line)
        yield


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def _live(app: App, console: Console, quiet: bool) -> contextlib.AbstractContextManager[Any]:
    return contextlib.nullcontext() if quiet else live_status(app, console)


def _resolve(namespace: dict[str, Any], name: str, path: str) -> tuple[App, Callable[..., Any]]:
    """Find the app and the callable (entrypoint, or a function's ``remote``) to run."""
    apps = [v for v in namespace.values() if isinstance(v, App)]
    if not apps:
        raise click.UsageError(f"{path} defines no shoal.App")
    candidates: dict[str, tuple[App, Callable[..., Any]]] = {}
    for app in apps:
        for fname, function in app.registered_functions.items():
            candidates.setdefault(fname, (app, _remote_of(function)))
        for ename, entry in app.registered_entrypoints.items():
            candidates[ename] = (app, entry)  # entrypoints win over functions
    if name:
        if name not in candidates:
            raise click.UsageError(
                f"{path} has no entrypoint or function {name!r}; choose from {sorted(candidates)}"
            )
        return candidates[name]
    entrypoints = [(a, e) for a in apps for e in a.registered_entrypoints.values()]
    if len(entrypoints) == 1:
        return entrypoints[0]
    if not entrypoints and len(candidates) == 1:
        return next(iter(candidates.values()))
    raise click.UsageError(
        f"{path} has several candidates; name one: {path}::NAME with NAME in {sorted(candidates)}"
    )


def _remote_of(function: Function[Any, Any]) -> Callable[..., Any]:
    def call(**kwargs: Any) -> Any:
        return function.remote(**kwargs)

    call.__signature__ = inspect.signature(function.__shoal_raw_function__)  # type: ignore[attr-defined]
    return call


def _parse_args(call: Callable[..., Any], args: list[str]) -> dict[str, Any]:
    """Turn ``--name value`` options into keyword arguments of ``call``."""
    params: list[click.Parameter] = []
    for param in inspect.signature(call).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        kind = _TYPES.get(param.annotation, click.STRING)
        required = param.default is inspect.Parameter.empty
        params.append(
            click.Option(
                [f"--{param.name.replace('_', '-')}", param.name],
                type=kind,
                required=required,
                default=None if required else param.default,
            )
        )
    command = click.Command("entrypoint", params=params, callback=lambda **kw: kw)
    try:
        parsed: dict[str, Any] = command.main(args, standalone_mode=False)
    except click.ClickException as exc:
        raise click.UsageError(exc.format_message()) from None
    return parsed
