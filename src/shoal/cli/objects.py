"""``shoal secret ...``: the named objects a server keeps, from the command line."""

from __future__ import annotations

import json
import sys

import click

from shoal.cli.service import JSON_FLAG, ask_server, when
from shoal.client.secret import parse_dotenv


@click.group()
def secret() -> None:
    """Named secrets (environment variables for containers): create, list, delete."""


@secret.command("create")
@click.argument("name")
@click.argument("pairs", nargs=-1)
@click.option(
    "--from-dotenv", "dotenv", default=None, help="Also read KEY=VALUE lines from a file."
)
@click.option("--force", is_flag=True, help="Replace a secret of that name.")
def secret_create(name: str, pairs: tuple[str, ...], dotenv: str | None, force: bool) -> None:
    """Store KEY=VALUE pairs as secret NAME (a VALUE of - reads it from stdin)."""
    values: dict[str, str] = {}
    if dotenv is not None:
        with open(dotenv) as source:
            values.update(parse_dotenv(source.read()))
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise click.UsageError(f"{pair!r}: expected KEY=VALUE")
        values[key] = sys.stdin.read().rstrip("\n") if value == "-" else value
    if not values:
        raise click.UsageError("give at least one KEY=VALUE (or --from-dotenv FILE)")
    ask_server("secret_create", name=name, values=values, overwrite=force)
    click.echo(f"created secret {name} with keys {', '.join(sorted(values))}")


@secret.command("list")
@JSON_FLAG
def secret_list(as_json: bool) -> None:
    """Every secret: its name and key names (values are never shown)."""
    rows = ask_server("secret_list")
    if as_json:
        click.echo(json.dumps(rows))
        return
    click.echo(f"{'NAME':24} {'UPDATED':20} KEYS")
    for row in rows:
        click.echo(f"{row['name']:24} {when(row['updated']):20} {', '.join(row['keys'])}")


@secret.command("delete")
@click.argument("name")
def secret_delete(name: str) -> None:
    """Forget secret NAME."""
    ask_server("secret_delete", name=name)
    click.echo(f"deleted secret {name}")


COMMANDS = (secret,)
