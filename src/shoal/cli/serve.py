"""``shoal serve FILE``: run an app's web endpoints until Ctrl-C, reloading on changes.

With reload (the default) this process only supervises: it runs the server as a
child (``shoal serve --no-reload``) and restarts it whenever the app's source
changes, keeping the port and the token. "The app's source" is the app's file and
the local modules it imports from its folder (not installed packages, not other
files that happen to sit there): the child lists them once it has loaded the app,
and the supervisor watches exactly those with the system's file notifications
(inotify, through watchfiles), so it costs nothing while nothing changes. The child
starts the app, serves its endpoints through the gateway, and prints one URL per
endpoint.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import click
import watchfiles

from shoal import settings
from shoal.cli.serving import DASHBOARD_HELP, announce_dashboard, serving
from shoal.client.app import App
from shoal.client.user_module import load_file, local_files
from shoal.exception import InvalidError

#: Exit status of a server that could not listen (the supervisor then stops too: a
#: change to the app's files would not free the port).
_CANNOT_LISTEN = 3
#: Milliseconds the watcher waits for a change before it looks at the child again.
_TICK_MS = 500


#: Folder names under the app's folder that hold installed code, not the app's own.
@click.command()
@click.argument("path")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8000, show_default=True, help="Port to bind (0: any free).")
@click.option(
    "--reload/--no-reload",
    default=True,
    show_default=True,
    help="Restart when the app's file or a local module it imports changes.",
)
@click.option("--dashboard", is_flag=True, help=DASHBOARD_HELP)
@click.option(
    "--dashboard-port",
    type=int,
    default=0,
    help="The dashboard's port (0: any free one; give one to keep it across reloads).",
)
@click.option("--report-files", default=None, hidden=True, help="Where to list the app's files.")
def serve(
    path: str,
    host: str,
    port: int,
    reload: bool,
    dashboard: bool,
    dashboard_port: int,
    report_files: str | None,
) -> None:
    """Serve the web endpoints of the app in PATH until Ctrl-C."""
    file = Path(path)
    if not file.is_file() or file.suffix != ".py":
        raise click.UsageError(f"{path}: no such Python file")
    console = dashboard_port if dashboard else None
    if reload:
        _supervise(path, host, port, console)
    else:
        _serve(path, host, port, console, report_files)


def _report(path: str, report_files: str) -> None:
    files = local_files(Path(path).resolve().parent)
    partial = report_files + ".new"
    Path(partial).write_text(json.dumps(files))
    os.replace(partial, report_files)


def _serve(
    path: str, host: str, port: int, console: int | None, report_files: str | None = None
) -> None:
    """Serve the app in ``path``; ``console``: the dashboard's port, if it is served."""
    try:
        module = load_file(path)
    except InvalidError as exc:
        raise click.UsageError(str(exc)) from None
    if report_files is not None:
        _report(path, report_files)
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
            for line in served.listing():
                click.echo(line)
            if console is not None:
                announce_dashboard(apps[0], console, lambda line: click.echo(line, err=True))
            sys.stdout.flush()
            stop.wait()
    except KeyboardInterrupt:
        pass
    except OSError as exc:  # the port is taken, or the host is not this machine's
        click.echo(f"Error: {exc} (is another server on that port? try --port)", err=True)
        raise SystemExit(_CANNOT_LISTEN) from None


def _watched(app_file: str, report: Path) -> set[str]:
    """The files to watch: the app's, and the local modules its server last reported."""
    files = {app_file}
    try:
        files.update(json.loads(report.read_text()))
    except (OSError, ValueError):
        pass  # not reported yet (or the app failed to load): its file is enough
    return files


def _exit_on_signal(*_: object) -> None:
    raise SystemExit(0)  # runs the supervisor's cleanup: the server child is stopped too


def _only(files: frozenset[str]) -> Callable[[watchfiles.Change, str], bool]:
    def wanted(_: watchfiles.Change, path: str) -> bool:
        return path in files

    return wanted


def _wait_for_change(
    app_file: str, report: Path, child: subprocess.Popen[bytes], first: bool
) -> None:
    """Block until one of the app's files changes.

    Raises:
        SystemExit: the first server could not listen (it said why), or failed with no
            terminal to edit the app from (its exit code).
    """
    complained = False
    while True:
        files = frozenset(_watched(app_file, report))
        folders = sorted({str(Path(file).parent) for file in files})
        reported = report.read_text() if report.exists() else ""
        for changes in watchfiles.watch(
            *folders,
            watch_filter=_only(files),
            recursive=False,
            rust_timeout=_TICK_MS,
            yield_on_timeout=True,
            debounce=200,
        ):
            if changes:
                return
            if first and child.poll() == _CANNOT_LISTEN:
                raise SystemExit(1)
            if first and child.poll() not in (None, 0) and not sys.stdin.isatty():
                raise SystemExit(child.returncode)  # no one at a terminal to fix the file
            if child.poll() is not None and child.returncode != 0 and not complained:
                complained = True
                click.echo(f"server exited with {child.returncode}; waiting for a change", err=True)
            if (report.read_text() if report.exists() else "") != reported:
                break  # the server listed its files (anew): watch those


def _supervise(path: str, host: str, port: int, console: int | None) -> None:
    app_file = str(Path(path).resolve())
    token = settings.gateway_token() or secrets.token_urlsafe(24)
    env = {**os.environ, "SHOAL_GATEWAY_TOKEN": token}  # the same token across reloads
    with tempfile.TemporaryDirectory(prefix="shoal-serve-") as scratch:
        report = Path(scratch, "files.json")
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
            "--report-files",
            str(report),
            *(() if console is None else ("--dashboard", "--dashboard-port", str(console))),
        ]
        child = subprocess.Popen(command, env=env)
        signal.signal(signal.SIGTERM, _exit_on_signal)
        try:
            first = True
            while True:
                _wait_for_change(app_file, report, child, first)
                first = False
                click.echo("change detected: reloading", err=True)
                child.terminate()
                child.wait()
                report.unlink(missing_ok=True)
                child = subprocess.Popen(command, env=env)
        except KeyboardInterrupt:
            pass
        finally:
            child.terminate()
            child.wait()
