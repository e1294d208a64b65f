"""``shoal serve FILE``: run an app's web endpoints until Ctrl-C, reloading on changes.

With reload (the default) this process only supervises: it runs the server as a
child (``shoal serve --no-reload``) and restarts it whenever a ``.py`` file in the
app's folder changes, keeping the port and the token. The child starts the app,
serves its endpoints through the gateway, and prints one URL per endpoint.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import click

from shoal import settings
from shoal.client.app import App
from shoal.client.user_module import load_file
from shoal.exception import InvalidError
from shoal.gateway.server import serving

#: Seconds between looks at the app's files for changes.
_POLL = 0.3


@click.command()
@click.argument("path")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8000, show_default=True, help="Port to bind (0: any free).")
@click.option(
    "--reload/--no-reload",
    default=True,
    show_default=True,
    help="Restart when a .py file in the app's folder changes.",
)
def serve(path: str, host: str, port: int, reload: bool) -> None:
    """Serve the web endpoints of the app in PATH until Ctrl-C."""
    if reload:
        _supervise(path, host, port)
    else:
        _serve(path, host, port)


def _serve(path: str, host: str, port: int) -> None:
    try:
        module = load_file(path)
    except InvalidError as exc:
        raise click.UsageError(str(exc)) from None
    apps = [v for v in vars(module).values() if isinstance(v, App)]
    if len(apps) != 1:
        raise click.UsageError(f"{path} must define exactly one shoal.App (found {len(apps)})")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    token = settings.gateway_token()
    try:
        with apps[0].run(), serving(apps[0], host, port, token) as served:
            if served is None:
                raise click.UsageError(f"{path} has no web endpoints")
            click.echo(f"serving on {served.url} (token: {served.token})", err=True)
            for name in served.gateway.routes:
                click.echo(f"  {served.url_for(name)}")
            sys.stdout.flush()
            stop.wait()
    except KeyboardInterrupt:
        pass


def _snapshot(folder: Path) -> dict[Path, float]:
    found = {}
    for file in folder.rglob("*.py"):
        try:
            found[file] = file.stat().st_mtime
        except OSError:
            continue
    return found


def _exit_on_signal(*_: object) -> None:
    raise SystemExit(0)  # runs the supervisor's cleanup: the server child is stopped too


def _supervise(path: str, host: str, port: int) -> None:
    folder = Path(path).resolve().parent
    token = settings.gateway_token() or secrets.token_urlsafe(24)
    env = {**os.environ, "SHOAL_GATEWAY_TOKEN": token}  # the same token across reloads
    command = [
        sys.executable,
        "-m",
        "shoal.cli",
        "serve",
        path,
        "--host",
        host,
        "--port",
        str(port),
        "--no-reload",
    ]
    child = subprocess.Popen(command, env=env)
    seen = _snapshot(folder)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        while True:
            time.sleep(_POLL)
            now = _snapshot(folder)
            if now != seen:
                seen = now
                click.echo("change detected: reloading", err=True)
                child.terminate()
                child.wait()
                child = subprocess.Popen(command, env=env)
            elif child.poll() is not None and child.returncode != 0:
                click.echo(f"server exited with {child.returncode}; waiting for a change", err=True)
    except KeyboardInterrupt:
        pass
    finally:
        child.terminate()
        child.wait()
