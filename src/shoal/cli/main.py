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
from collections.abc import Awaitable, Iterator
from typing import Any

import click
from rich.console import Console

from shoal.cli import errors, objects, sandbox, service, simulate, targets
from shoal.cli.serve import serve as serve_command
from shoal.cli.serving import DASHBOARD_HELP, announce_dashboard, serving
from shoal.client.app import App
from shoal.client.output import live_status
from shoal.exception import Error


@click.group()
@click.version_option(package_name="shoal")
def main() -> None:
    """Shoal: Python functions in autoscaling pools of containers."""


@main.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.argument("target", required=False)
@click.option("--quiet", "-q", is_flag=True, help="No live status display.")
@click.option(
    "--detach",
    "-d",
    is_flag=True,
    help="Let the app's inputs finish after the entrypoint returns (on a server: after "
    "this command ends; with none, this command waits for them).",
)
@click.option("-m", "as_module", is_flag=True, help="TARGET is a module path, not a file.")
@click.option("--dashboard", is_flag=True, help=DASHBOARD_HELP)
@click.option("--dashboard-port", type=int, default=0, help="The dashboard's port (0: any free).")
@click.option("--help", "-h", "show_help", is_flag=True, help="Show this message and exit.")
@click.pass_context
def run(
    ctx: click.Context,
    target: str | None,
    quiet: bool,
    detach: bool,
    as_module: bool,
    dashboard: bool,
    dashboard_port: int,
    show_help: bool,
) -> None:
    """Run TARGET against an ephemeral app: on the server this machine is told to use, or
    finds running, else in this process.

    TARGET is FILE.py, FILE.py::NAME (an entrypoint or a function) or
    FILE.py::Cls.method; with -m, a module path (pkg.mod, pkg.mod::NAME). Options after
    it are the entrypoint's (`shoal run TARGET --help` lists them).
    """
    if target is None:
        if show_help:
            click.echo(ctx.get_help())
            return
        raise click.UsageError("missing TARGET (FILE.py, FILE.py::NAME or -m MODULE)")
    module, name, where = targets.load_target(target, as_module)
    app, call = targets.resolve(vars(module), name, where)
    usage = f"{ctx.find_root().info_name} run {'-m ' if as_module else ''}{target}"
    if show_help:
        targets.print_help(call, usage)
        return
    kwargs = targets.parse_args(call, ctx.args, usage)
    console = Console(stderr=True, soft_wrap=True)  # URLs and tokens stay whole
    try:
        with contextlib.ExitStack() as running:
            try:
                running.enter_context(app.run(detach=detach))
            except Error as exc:  # the app could not start: no user code ran
                errors.one_line(exc)
                sys.exit(1)
            running.enter_context(_served(app, console))
            if dashboard:
                announce_dashboard(app, dashboard_port, console.print)
            running.enter_context(_live(app, console, quiet))
            result = call(**kwargs)
            if inspect.isawaitable(result):  # an ``async def`` entrypoint
                result = asyncio.run(_awaited(result))
    except KeyboardInterrupt:
        console.print("[yellow]interrupted; containers stopped[/yellow]")
        sys.exit(130)
    except Exception as exc:
        errors.print_traceback(exc)
        sys.exit(1)
    if result is not None:
        click.echo(result)


main.add_command(serve_command)
for _command in (*service.COMMANDS, *objects.COMMANDS, *simulate.COMMANDS, *sandbox.COMMANDS):
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
