"""The service commands: ``shoal server``, ``deploy``, ``app``, ``container``, ``token``.

``shoal server`` runs the control plane as a long-lived process
(:mod:`shoal.server.server`); the other commands talk to it as any client does
(:mod:`shoal.client.connection`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import click

from shoal import log, settings
from shoal.backends import names as backend_names
from shoal.bridge import run_sync
from shoal.cli.confirm import confirm, yes_option
from shoal.client.app import App
from shoal.client.connection import Connection, connect
from shoal.client.deploy import deploy as deploy_app
from shoal.client.target import write_profile
from shoal.client.user_module import load_file
from shoal.exception import ConnectionError, Error
from shoal.server.server import DEFAULT_HTTP_PORT, DEFAULT_PORT, Server, ServerOptions

T = TypeVar("T")


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, help="Port for clients.")
@click.option(
    "--http-port", default=DEFAULT_HTTP_PORT, show_default=True, help="Port for web endpoints."
)
@click.option("--home", default=None, help="State directory [default: $SHOAL_HOME or ~/.shoal].")
@click.option("--tls-cert", default=None, help="PEM certificate: clients connect with TLS.")
@click.option("--tls-key", default=None, help="PEM private key of --tls-cert.")
@click.option("--insecure", is_flag=True, help="Allow a non-loopback address without TLS.")
@click.option(
    "--origin-ports",
    default=None,
    metavar="FIRST-LAST",
    help="Ports web endpoints take for origins of their own [default: any free ones].",
)
@click.option(
    "--backend",
    type=click.Choice(backend_names()),
    default=None,
    help="Where containers run [default: $SHOAL_BACKEND or local].",
)
@click.option(
    "--ray-address",
    default=None,
    help="The Ray cluster of --backend ray: its GCS address [default: $SHOAL_RAY_ADDRESS or auto].",
)
@click.option(
    "--volume-root",
    default=None,
    help="Where volumes live: a folder every node mounts (needed for volumes on a cluster) "
    "[default: the home's volumes/].",
)
@click.option(
    "--isolation",
    type=click.Choice(["on", "off", "auto"]),
    default=None,
    help="Run containers in jails (bubblewrap) [default: $SHOAL_ISOLATION or auto: on "
    "where bubblewrap works]. off prints a warning: containers can read the server's files.",
)
@click.option(
    "--metrics-public",
    is_flag=True,
    help="Serve /metrics on the HTTP port without the token.",
)
def server(
    host: str,
    port: int,
    http_port: int,
    home: str | None,
    tls_cert: str | None,
    tls_key: str | None,
    insecure: bool,
    origin_ports: str | None,
    backend: str | None,
    ray_address: str | None,
    volume_root: str | None,
    isolation: str | None,
    metrics_public: bool,
) -> None:
    """Run the Shoal server: deployed apps, their containers, and their web endpoints
    (and Prometheus metrics at /metrics on the HTTP port, behind the token)."""
    options = ServerOptions(
        home=home or settings.home(),
        host=host,
        port=port,
        http_port=http_port,
        tls_cert=tls_cert,
        tls_key=tls_key,
        insecure=insecure,
        origin_ports=None if origin_ports is None else _port_range(origin_ports),
        backend=backend,
        backend_address=ray_address,
        volume_root=volume_root,
        metrics_public=metrics_public,
        isolation=None if isolation in (None, "auto") else isolation == "on",
    )
    try:
        log.configure()
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        asyncio.run(_serve(options))
    except Error as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:  # an address in use, or not this machine's
        where = f"{options.host} port {options.port} or {options.http_port}"
        raise click.ClickException(
            f"cannot listen on {where}: {exc.strerror or exc} (is another server running? "
            "pick others with --port and --http-port)"
        ) from None


def _port_range(text: str) -> range:
    """``41100-41199`` as the ports it names (both ends included).

    Raises:
        click.BadParameter: not FIRST-LAST with 1 <= FIRST <= LAST <= 65535.
    """
    first, sep, last = text.partition("-")
    if not (sep and first.isdigit() and last.isdigit() and 0 < int(first) <= int(last) < 65536):
        raise click.BadParameter(f"{text!r}: expected FIRST-LAST, e.g. 41100-41199")
    return range(int(first), int(last) + 1)


async def _serve(options: ServerOptions) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    instance = Server(options)
    await instance.start()
    try:
        log.say(
            f"shoal server on {instance.url} (home {instance.home})",
            component="server",
            url=instance.url,
            home=instance.home,
        )
        if instance.http_url:
            log.say(
                f"web endpoints on {instance.http_url}/<app>/<function>",
                component="server",
                http_url=instance.http_url,
            )
            log.say(
                f"dashboard on {instance.http_url}/_shoal/",
                component="server",
                dashboard=f"{instance.http_url}/_shoal/",
            )
        token_file = os.path.join(instance.home, "token")
        if instance.new_token is not None:
            log.say(f"access token (shown once; also in {token_file}):", component="server")
            click.echo(instance.new_token)  # the bare token on stdout, for a script to read
        else:
            log.say(f"access token: in {token_file} (or SHOAL_TOKEN)", component="server")
        await stop.wait()
    finally:
        await instance.stop()


def _when(text: str) -> float:
    """Seconds since the epoch of ``text``: a time ago (``90s``, ``30m``, ``2h``, ``1d``) or
    an ISO date and time (``2026-12-07T10:00``, local time unless it names a zone)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[-1:] in units and text[:-1].replace(".", "", 1).isdigit():
        return time.time() - float(text[:-1]) * units[text[-1]]
    try:
        return datetime.datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise click.BadParameter(
            f"{text!r}: expected 30m, 2h, 1d or an ISO date and time"
        ) from None


def _stamp(when: float) -> str:
    return datetime.datetime.fromtimestamp(when).isoformat(timespec="milliseconds")


def ask_server(op: str, **body: Any) -> Any:
    async def ask() -> Any:
        connection = await connect()
        return await connection.request(op, **body)

    return _run(ask())


def _run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        return run_sync(coro)
    except Error as exc:
        raise click.ClickException(str(exc)) from None


@click.command()
@click.argument("path")
@click.option("--name", default=None, help="Deploy under this name [default: the app's].")
def deploy(path: str, name: str | None) -> None:
    """Deploy the app in PATH to the server; it runs until `shoal app stop`."""
    try:
        module = load_file(path)
    except Error as exc:
        raise click.UsageError(str(exc)) from None
    apps = [v for v in vars(module).values() if isinstance(v, App)]
    if len(apps) != 1:
        raise click.UsageError(f"{path} must define exactly one shoal.App (found {len(apps)})")
    try:
        answer = deploy_app(apps[0], path, name)
    except Error as exc:
        raise click.ClickException(str(exc)) from None
    app_name = name or apps[0].name
    click.echo(f"deployed {app_name} version {answer['version']}")
    paths, origins = answer.get("paths", {}), answer["web"]
    for function, kind in answer.get("functions", {}).items():
        click.echo(f"  {function} ({kind})")
        endpoints = [e for e in paths if e == function or e.startswith(function + ".")]
        for endpoint in sorted(endpoints):
            origin = origins.get(endpoint)
            also = f" (its own origin: {origin})" if origin and origin != paths[endpoint] else ""
            click.echo(f"    {endpoint}: {paths[endpoint]}{also}")


@click.group()
def app() -> None:
    """Deployed apps: list, stop, history."""


#: How often ``shoal app logs -f`` asks for new lines (seconds).
_FOLLOW_EVERY = 0.5
#: Seconds between tries to reach a server a follower lost.
_RETRY_EVERY = 1.0

JSON_FLAG = click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")


def print_rows(
    rows: list[dict[str, Any]],
    as_json: bool,
    header: str | None,
    line: Callable[[dict[str, Any]], str],
) -> None:
    """Print ``rows`` as JSON (``--json``), or as a table: ``header``, then ``line(row)``
    for each."""
    if as_json:
        click.echo(json.dumps(rows))
        return
    if header is not None:
        click.echo(header)
    for row in rows:
        click.echo(line(row))


@app.command("list")
@JSON_FLAG
def app_list(as_json: bool) -> None:
    """List the server's apps: deployed ones by name, ephemeral ones (`shoal run`) by id."""
    print_rows(
        ask_server("app_list"),
        as_json,
        f"{'NAME':24} {'ID':16} {'VERSION':>7} {'STATE':9} {'CONTAINERS':>10}  UPDATED",
        lambda row: (
            f"{row['name']:24} {row['id']:16} {row['version']:>7} {row['state']:9} "
            f"{row['containers']:>10}  {when(row['updated'])}"
        ),
    )


@app.command("stop")
@click.argument("name")
@yes_option
def app_stop(name: str, yes: bool) -> None:
    """Stop app NAME: its containers stop; inputs still waiting fail."""
    confirm(f"Stop app {name!r}? Its containers stop and inputs still waiting fail.", yes)
    ask_server("app_stop", app=name)
    click.echo(f"stopped {name}")


@app.command("logs")
@click.argument("name")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until Ctrl-C.")
@click.option("--since", default=None, help="Lines from this long ago (1h, 30m) or time on.")
@click.option("--until", default=None, help="Lines up to this long ago (10m) or time.")
@click.option("--tail", type=int, default=None, help="Only the last N lines (then follow).")
@click.option("--search", default=None, help="Only lines that contain this text.")
@click.option("--function", "function", default=None, help="Only this function's lines.")
@click.option("--container", default=None, help="Only this container's lines.")
@click.option("--input", "input_id", default=None, help="Only lines printed by this call.")
@click.option("--timestamps", is_flag=True, help="Start each line with its time.")
def app_logs(
    name: str,
    follow: bool,
    since: str | None,
    until: str | None,
    tail: int | None,
    search: str | None,
    function: str | None,
    container: str | None,
    input_id: str | None,
    timestamps: bool,
) -> None:
    """Print what app NAME's containers wrote, each line prefixed with its container:
    <app>.v<version>.<function>-c<n>. A server keeps every line on disk (rotated:
    SHOAL_LOG_BYTES, SHOAL_LOG_FILES) and the last SHOAL_LOG_LINES in memory. Lines marked
    "shoal:" (on stderr) say when a container was ready and why it stopped. A line printed
    while an input ran is that call's: --input ID (a FunctionCall's object_id) finds them."""
    filters: dict[str, Any] = {
        key: value
        for key, value in {
            "since": None if since is None else _when(since),
            "until": None if until is None else _when(until),
            "tail": tail,
            "search": search,
            "function": function,
            "container": container,
            "input": input_id,
        }.items()
        if value is not None
    }

    async def read() -> None:
        connection = await connect()
        cursor = ""
        lost = False
        while True:
            try:
                answer = await connection.request("app_logs", app=name, cursor=cursor, **filters)
            except ConnectionError as exc:
                if not follow:
                    raise
                if not lost:
                    _note(f"lost the server ({exc}); trying again every {_RETRY_EVERY:g} s")
                    lost = True
                await asyncio.sleep(_RETRY_EVERY)
                continue
            if lost or answer.get("restarted"):
                _note(
                    "following again: the server restarted, and what its containers wrote "
                    "while it was down is lost"
                    if answer.get("restarted")
                    else "following again: the server is back"
                )
                lost = False
            for line in answer["lines"]:
                out = sys.stdout if line["stream"] == "stdout" else sys.stderr
                said = "shoal: " if line["stream"] == "shoal" else ""  # a start or a stop
                stamp = f"{_stamp(line['time'])} " if timestamps else ""
                print(f"{stamp}[{line['container']}] {said}{line['text']}", file=out, flush=True)
            cursor = answer["cursor"]
            filters.pop("tail", None)  # what follows is every new line
            if not follow:
                return
            await asyncio.sleep(_FOLLOW_EVERY)

    with contextlib.suppress(KeyboardInterrupt):
        _run(read())


def _note(text: str) -> None:
    """Say something about the follow itself (not a line of the app's) on stderr."""
    click.echo(f"[shoal] {text}", err=True)


@app.command("history")
@click.argument("name")
def app_history(name: str) -> None:
    """List the deployments of app NAME."""
    for row in ask_server("app_history", app=name):
        click.echo(f"v{row['version']:<4} {when(row['created'])}  {row['bundle']}  {row['client']}")


@click.group()
def container() -> None:
    """The server's containers: list, exec, stop."""


@container.command("list")
@JSON_FLAG
def container_list(as_json: bool) -> None:
    """List running containers."""
    print_rows(
        ask_server("container_list"),
        as_json,
        f"{'ID':40} {'STATE':9} {'PID':>7} {'INPUTS':>6}",
        lambda row: f"{row['id']:40} {row['state']:9} {row['pid'] or '-':>7} {row['running']:>6}",
    )


@container.command("exec", context_settings={"ignore_unknown_options": True})
@click.argument("container_id")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option(
    "--timeout", default=600.0, show_default=True, help="Seconds before the command is killed."
)
def container_exec(container_id: str, command: tuple[str, ...], timeout: float) -> None:
    """Run COMMAND inside running container CONTAINER_ID (`shoal container exec ID -- ls /`),
    isolated as the container is; print its output as it comes and exit with its code."""

    async def run() -> int | None:
        connection = await connect()
        started = await connection.request(
            "container_exec", id=container_id, argv=list(command), timeout=timeout
        )
        exec_id = started["exec_id"]

        async def pump(fd: int, out: Any) -> None:
            offset = 0
            while True:
                got = await connection.request(
                    "container_exec_read", exec_id=exec_id, fd=fd, offset=offset, wait=5.0
                )
                if got["data"]:
                    out.write(got["data"])
                    out.flush()
                offset = got["offset"]
                if got["eof"]:
                    return

        await asyncio.gather(pump(1, sys.stdout.buffer), pump(2, sys.stderr.buffer))
        while True:
            ended = await connection.request("container_exec_wait", exec_id=exec_id, wait=5.0)
            if ended["ended"]:
                code: int | None = ended["code"]
                return code

    code = _run(run())
    # As a shell would say it: 124 for its timeout, 128 + N for signal N, 255 for a
    # container that ended first.
    sys.exit(255 if code is None else 124 if code == -1 else 128 - code if code < 0 else code)


@container.command("stop")
@click.argument("container_id")
@yes_option
def container_stop(container_id: str, yes: bool) -> None:
    """Stop container CONTAINER_ID once its inputs finish."""
    confirm(f"Stop container {container_id}?", yes)
    ask_server("container_stop", id=container_id)
    click.echo(f"stopping {container_id}")


@click.group()
def token() -> None:
    """Where clients find the server: profiles in ~/.shoal.toml."""


@token.command("set")
@click.option(
    "--url",
    required=True,
    help="The server, e.g. tcp://10.0.0.5:7420 or tls://shoal.example.com:7420.",
)
@click.option("--token", "secret", required=True, help="Its access token.")
@click.option("--profile", default="default", show_default=True)
@click.option("--verify/--no-verify", default=True, help="Connect once to check the token.")
def token_set(url: str, secret: str, profile: str, verify: bool) -> None:
    """Save URL and TOKEN as the active profile (file mode 0600)."""
    if verify:
        from shoal.client.target import Target

        async def check() -> None:
            connection = await Connection.open(Target(url, secret, "--url/--token"))
            connection.close()

        _run(check())
    path = write_profile(url, secret, profile)
    click.echo(f"saved profile {profile!r} in {path}")


def when(timestamp: float) -> str:
    if not timestamp:
        return "-"
    return datetime.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


COMMANDS = (server, deploy, app, container, token)
