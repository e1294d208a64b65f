"""``shoal sandbox list | logs | terminate``: a server's sandboxes (server/sandboxes.py)."""

from __future__ import annotations

import click

from shoal.cli.confirm import confirm, yes_option
from shoal.cli.service import JSON_FLAG, ask_server, print_rows, when


@click.group()
def sandbox() -> None:
    """The server's sandboxes: list, logs, terminate."""


@sandbox.command("list")
@click.option("--app", "app_name", default="", help="Only this app's sandboxes.")
@click.option("--tag", "tags", multiple=True, help="Only those with this tag: KEY=VALUE.")
@click.option(
    "--all", "every", is_flag=True, help="Ended ones too (the server keeps the last 10,000)."
)
@JSON_FLAG
def sandbox_list(app_name: str, tags: tuple[str, ...], every: bool, as_json: bool) -> None:
    """List running sandboxes (with --all, ended ones too, with how they ended)."""
    wanted = {}
    for tag in tags:
        key, sep, value = tag.partition("=")
        if not sep:
            raise click.BadParameter(f"{tag!r}: expected KEY=VALUE", param_hint="--tag")
        wanted[key] = value
    print_rows(
        ask_server("sandbox_list", app=app_name, tags=wanted, all=every),
        as_json,
        f"{'ID':20} {'APP':16} {'NAME':16} {'CREATED':19} {'STATE':22} COMMAND",
        lambda row: (
            f"{row['object_id']:20} {row['app']:16} {row['name'] or '-':16} "
            f"{when(row['created']):19} {_state(row):22} {' '.join(row['command']) or '-'}"
        ),
    )


def _state(row: dict[str, object]) -> str:
    """``running``, or how it ended: ``137 server stopped``."""
    if row.get("returncode") is None:
        return "running"
    return f"{row['returncode']} {row.get('reason') or ''}".strip()


@sandbox.command("logs")
@click.argument("sandbox_id")
@click.option("--timestamps", is_flag=True, help="Start each line with its time.")
def sandbox_logs(sandbox_id: str, timestamps: bool) -> None:
    """Print the last 1,000 lines sandbox SANDBOX_ID's own command wrote (its stderr on
    stderr), whether or not its streams' reader took them."""
    for row in ask_server("sandbox_logs", object_id=sandbox_id):
        stamp = f"{when(row['time'])} " if timestamps else ""
        click.echo(f"{stamp}{row['text']}", err=row["stream"] == "stderr")


@sandbox.command("terminate")
@click.argument("sandbox_id")
@yes_option
def sandbox_terminate(sandbox_id: str, yes: bool) -> None:
    """End sandbox SANDBOX_ID now: everything in it is killed (its exit code: 137)."""
    confirm(f"Terminate sandbox {sandbox_id}?", yes)
    ask_server("sandbox_terminate", object_id=sandbox_id)
    click.echo(f"terminated {sandbox_id}")


COMMANDS = (sandbox,)
