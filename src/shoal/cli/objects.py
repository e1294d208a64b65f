"""``shoal secret|volume|dict|queue ...``: named objects, from the command line.

They live on the server this machine uses, or with none, under its own
``SHOAL_HOME``. Dict and Queue values are shown as the ``repr`` of their unpickled
values (one whose class this process cannot import is a one-line error).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

import click

from shoal.cli.service import JSON_FLAG, print_rows, when
from shoal.client.bridge import run_sync
from shoal.client.dict import Dict
from shoal.client.objects import request
from shoal.client.queue import Queue
from shoal.client.secret import parse_dotenv
from shoal.exception import Error


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
    _objects("secret_create", name=name, values=values, overwrite=force)
    click.echo(f"created secret {name} with keys {', '.join(sorted(values))}")


@secret.command("list")
@JSON_FLAG
def secret_list(as_json: bool) -> None:
    """Every secret: its name and key names (values are never shown)."""
    print_rows(
        _objects("secret_list"),
        as_json,
        f"{'NAME':24} {'UPDATED':20} KEYS",
        lambda row: f"{row['name']:24} {when(row['updated']):20} {', '.join(row['keys'])}",
    )


@secret.command("delete")
@click.argument("name")
def secret_delete(name: str) -> None:
    """Forget secret NAME."""
    _objects("secret_delete", name=name)
    click.echo(f"deleted secret {name}")


def _objects(op: str, **body: Any) -> Any:
    with _errors():
        return run_sync(request(op, **body))


@click.group()
def volume() -> None:
    """Volumes (folders mounted into containers): create, list, ls, put, get, rm, delete."""


@volume.command("create")
@click.argument("name")
def volume_create(name: str) -> None:
    """Create volume NAME (nothing happens if it exists)."""
    _objects("volume_open", name=name, create=True)
    click.echo(f"created volume {name}")


@volume.command("list")
@JSON_FLAG
def volume_list(as_json: bool) -> None:
    """Every volume."""
    print_rows(
        _objects("volume_list"),
        as_json,
        f"{'NAME':32} CREATED",
        lambda row: f"{row['name']:32} {when(row['created'])}",
    )


@volume.command("ls")
@click.argument("name")
@click.argument("path", default="/")
@JSON_FLAG
def volume_ls(name: str, path: str, as_json: bool) -> None:
    """The files and folders at PATH in volume NAME."""
    print_rows(
        _objects("volume_ls", name=name, path=path),
        as_json,
        None,
        lambda row: (
            f"{row['size']:>12}  {when(row['mtime'])}  {row['path']}"
            + ("/" if row["type"] == "dir" else "")
        ),
    )


@volume.command("put")
@click.argument("name")
@click.argument("local", type=click.Path(exists=True, dir_okay=True))
@click.argument("remote", default="/")
def volume_put(name: str, local: str, remote: str) -> None:
    """Copy file or folder LOCAL into volume NAME at REMOTE (a folder when it ends in /)."""
    files = _local_files(local)
    for source, relative in files:
        if remote.endswith("/") or len(files) > 1 or os.path.isdir(local):
            target = os.path.join(remote, relative)
        else:
            target = remote
        with open(source, "rb") as data:
            _objects("volume_put", name=name, path=target, data=data.read())
    click.echo(f"put {len(files)} file(s) into volume {name}")


def _local_files(local: str) -> list[tuple[str, str]]:
    if not os.path.isdir(local):
        return [(local, os.path.basename(local))]
    found = []
    for folder, _, names in os.walk(local):
        for file in sorted(names):
            full = os.path.join(folder, file)
            found.append((full, os.path.relpath(full, local)))
    return found


@volume.command("get")
@click.argument("name")
@click.argument("remote")
@click.argument("local", default="-")
def volume_get(name: str, remote: str, local: str) -> None:
    """Copy file REMOTE of volume NAME to LOCAL (- for stdout)."""
    data = _objects("volume_get", name=name, path=remote)
    if local == "-":
        sys.stdout.buffer.write(data)
        return
    if os.path.isdir(local):
        local = os.path.join(local, os.path.basename(remote))
    with open(local, "wb") as out:
        out.write(data)


@volume.command("rm")
@click.argument("name")
@click.argument("path")
@click.option("-r", "--recursive", is_flag=True, help="Remove a folder and what it holds.")
def volume_rm(name: str, path: str, recursive: bool) -> None:
    """Remove PATH from volume NAME."""
    _objects("volume_rm", name=name, path=path, recursive=recursive)
    click.echo(f"removed {path} from volume {name}")


@volume.command("delete")
@click.argument("name")
def volume_delete(name: str) -> None:
    """Delete volume NAME and everything in it."""
    _objects("volume_delete", name=name)
    click.echo(f"deleted volume {name}")


@click.group("dict")
def dict_group() -> None:
    """Named Dicts: list, items, get, clear, delete."""


def _rows(kind: str, as_json: bool) -> None:
    print_rows(
        _objects(f"{kind}_list"),
        as_json,
        f"{'NAME':32} {'ITEMS':>8}  CREATED",
        lambda row: f"{row['name']:32} {row['items']:>8}  {when(row['created'])}",
    )


@dict_group.command("list")
@JSON_FLAG
def dict_list(as_json: bool) -> None:
    """Every named Dict, with how many items it holds."""
    _rows("dict", as_json)


@dict_group.command("items")
@click.argument("name")
@click.argument("n", type=int, default=20)
def dict_items(name: str, n: int) -> None:
    """The first N items of Dict NAME (all of them for N=0)."""
    with _errors():
        for index, (key, value) in enumerate(Dict.from_name(name).items()):
            if n and index >= n:
                break
            click.echo(f"{key!r}: {value!r}")


@dict_group.command("get")
@click.argument("name")
@click.argument("key")
def dict_get(name: str, key: str) -> None:
    """The value of KEY (a string key) in Dict NAME."""
    with _errors():
        missing = object()
        value = Dict.from_name(name).get(key, missing)
    if value is missing:
        raise click.ClickException(f"Dict {name!r} has no key {key!r}")
    click.echo(repr(value))


@dict_group.command("clear")
@click.argument("name")
def dict_clear(name: str) -> None:
    """Remove every item of Dict NAME."""
    with _errors():
        Dict.from_name(name).clear()
    click.echo(f"cleared Dict {name}")


@dict_group.command("delete")
@click.argument("name")
def dict_delete(name: str) -> None:
    """Delete Dict NAME and its items."""
    _objects("dict_delete", name=name)
    click.echo(f"deleted Dict {name}")


@click.group("queue")
def queue_group() -> None:
    """Named Queues: list, len, peek, clear, delete."""


@queue_group.command("list")
@JSON_FLAG
def queue_list(as_json: bool) -> None:
    """Every named Queue, with how many items it holds (all partitions)."""
    _rows("queue", as_json)


@queue_group.command("len")
@click.argument("name")
@click.option("--partition", default=None, help="A partition (default: the unnamed one).")
@click.option("--total", is_flag=True, help="Count every partition.")
def queue_len(name: str, partition: str | None, total: bool) -> None:
    """How many items Queue NAME holds."""
    with _errors():
        click.echo(Queue.from_name(name).len(partition=partition, total=total))


@queue_group.command("peek")
@click.argument("name")
@click.argument("n", type=int, default=1)
@click.option("--partition", default=None, help="A partition (default: the unnamed one).")
def queue_peek(name: str, n: int, partition: str | None) -> None:
    """The next N items of Queue NAME, without taking them."""
    with _errors():
        for index, value in enumerate(Queue.from_name(name).iterate(partition=partition)):
            if index >= n:
                break
            click.echo(repr(value))


@queue_group.command("clear")
@click.argument("name")
@click.option("--partition", default=None, help="A partition (default: the unnamed one).")
@click.option("--all", "every", is_flag=True, help="Clear every partition.")
def queue_clear(name: str, partition: str | None, every: bool) -> None:
    """Remove the items of a partition of Queue NAME (or of all of them)."""
    with _errors():
        Queue.from_name(name).clear(partition=partition, all=every)
    click.echo(f"cleared Queue {name}")


@queue_group.command("delete")
@click.argument("name")
def queue_delete(name: str) -> None:
    """Delete Queue NAME and its items."""
    _objects("queue_delete", name=name)
    click.echo(f"deleted Queue {name}")


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """Shoal's errors as one-line command errors."""
    try:
        yield
    except Error as exc:
        raise click.ClickException(str(exc)) from None


COMMANDS = (secret, volume, dict_group, queue_group)
