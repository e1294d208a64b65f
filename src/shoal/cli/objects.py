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

from shoal.bridge import run_sync
from shoal.cli.confirm import confirm, yes_option
from shoal.cli.service import JSON_FLAG, print_rows, when
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
@yes_option
def secret_delete(name: str, yes: bool) -> None:
    """Forget secret NAME."""
    confirm(f"Delete secret {name!r}?", yes)
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
    """Create volume NAME (an error if it exists)."""
    answer = _objects("volume_open", name=name, create=True)
    if not answer.get("created"):
        raise click.ClickException(f"volume {name!r} already exists")
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
@click.option("-f", "--force", is_flag=True, help="Overwrite files the volume has already.")
def volume_put(name: str, local: str, remote: str, force: bool) -> None:
    """Copy file or folder LOCAL into volume NAME at REMOTE (a folder when it ends in /).

    A file the volume has already is an error, unless --force."""
    files = _local_files(local)
    for source, relative in files:
        if remote.endswith("/") or len(files) > 1 or os.path.isdir(local):
            target = os.path.join(remote, relative)
        else:
            target = remote
        with open(source, "rb") as data:
            _objects("volume_put", name=name, path=target, data=data.read(), overwrite=force)
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
@click.argument("local", default=".")
@click.option("--force", is_flag=True, help="Overwrite local files that exist.")
def volume_get(name: str, remote: str, local: str, force: bool) -> None:
    """Copy REMOTE (a file, or a folder and everything under it) of volume NAME to LOCAL
    (default: here; - writes a file to stdout). Local files that exist are left alone,
    unless --force."""
    found = _remote_files(name, remote)
    if local == "-":
        if len(found) != 1 or found[0][1] != "":
            raise click.UsageError(f"{remote!r} is a folder: give a local folder, not -")
        sys.stdout.buffer.write(_objects("volume_get", name=name, path=found[0][0]))
        return
    for path, relative in found:
        target = _local_target(local, path, relative)
        if os.path.exists(target) and not force:
            raise click.ClickException(f"{target} exists; pass --force to overwrite it")
        os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
        data = _objects("volume_get", name=name, path=path)
        with open(target, "wb") as out:
            out.write(data)
    click.echo(f"got {len(found)} file(s) from volume {name}", err=True)


def _remote_files(name: str, remote: str) -> list[tuple[str, str]]:
    """The files at ``remote`` in volume ``name``: (path in the volume, path relative to
    ``remote``; "" when ``remote`` is the file itself)."""
    top = _objects("volume_ls", name=name, path=remote)
    if len(top) == 1 and top[0]["type"] == "file" and _is_file(name, remote):
        return [(remote, "")]
    found: list[tuple[str, str]] = []
    folders = [("", top)]
    while folders:
        relative, entries = folders.pop()
        for entry in entries:
            inner = os.path.join(relative, entry["path"])
            if entry["type"] == "dir":
                below = _objects("volume_ls", name=name, path=os.path.join(remote, inner))
                folders.append((inner, below))
            else:
                found.append((os.path.join(remote, inner), inner))
    return sorted(found)


def _is_file(name: str, remote: str) -> bool:
    """Whether ``remote`` names a file (``volume_ls`` of a file lists the file itself)."""
    parent, _, base = remote.rstrip("/").rpartition("/")
    listing = _objects("volume_ls", name=name, path=parent or "/")
    return any(e["path"] == base and e["type"] == "file" for e in listing)


def _local_target(local: str, path: str, relative: str) -> str:
    """Where a downloaded file goes: a single file into a folder that exists keeps its name;
    a folder's files keep their places under ``local``."""
    if relative:
        return os.path.join(local, relative)
    if os.path.isdir(local) or local.endswith(os.sep):
        return os.path.join(local, os.path.basename(path))
    return local


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
@yes_option
def volume_delete(name: str, yes: bool) -> None:
    """Delete volume NAME and everything in it."""
    confirm(f"Delete volume {name!r} and every file in it?", yes)
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
@yes_option
def dict_delete(name: str, yes: bool) -> None:
    """Delete Dict NAME and its items."""
    confirm(f"Delete Dict {name!r} and its items?", yes)
    _objects("dict_delete", name=name)
    click.echo(f"deleted Dict {name}")


@click.group("queue")
def queue_group() -> None:
    """Named Queues: list, len, peek, clear, delete."""


@queue_group.command("list")
@JSON_FLAG
def queue_list(as_json: bool) -> None:
    """Every named Queue: its partitions, and the items they hold together."""
    print_rows(
        _objects("queue_list"),
        as_json,
        f"{'NAME':32} {'PARTITIONS':>10} {'TOTAL ITEMS':>11}  CREATED",
        lambda row: (
            f"{row['name']:32} {row['partitions']:>10} {row['items']:>11}  {when(row['created'])}"
        ),
    )


@queue_group.command("len")
@click.argument("name")
@click.option("--partition", default=None, help="A partition (default: the unnamed one).")
@click.option("--total", is_flag=True, help="Count every partition.")
def queue_len(name: str, partition: str | None, total: bool) -> None:
    """How many items one partition of Queue NAME holds (the unnamed one by default), or
    with --total, all of its partitions together (what `shoal queue list` shows)."""
    with _errors():
        handle = Queue.from_name(name)
        count = handle.len(partition=partition, total=total)
        every = count if total else handle.len(total=True)
    click.echo(count)
    if every != count:
        which = f"partition {partition!r}" if partition else "the unnamed partition"
        click.echo(f"({which}; {every} in all partitions: --total)", err=True)


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
@yes_option
def queue_delete(name: str, yes: bool) -> None:
    """Delete Queue NAME and its items."""
    confirm(f"Delete Queue {name!r} and its items?", yes)
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
