"""The embedded default: with no server, an app runs on the server's own code, started in the
caller's process and reached through the client connection like any other server."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from apps import basic, warm
from shoal.client.server_pool import ServerPool
from shoal.server import embedded

OTHER_PROCESS = """
import sys
sys.path.insert(0, {tests!r})
from apps import basic
with basic.app.run():
    print(basic.echo.remote("from the other process"), flush=True)
"""


def test_an_app_runs_on_an_embedded_server_through_the_connection() -> None:
    # An earlier test in this process may have started it (object ops start it and leave
    # it; App.lookup holds it for the process's life): then it may run on after the app;
    # started by the app, it stops with it.
    held = embedded.running()
    with basic.app.run():
        server = embedded.running()
        assert server is not None and server.options.embedded
        pool = basic.echo._pool()
        assert isinstance(pool, ServerPool) and pool.connection.local  # a pipe, no socket
        assert basic.echo.remote("hi") == "hi"
        assert list(basic.echo.map(range(300))) == list(range(300))
        assert basic.echo.spawn(7).get(timeout=60) == 7  # stored by the embedded server
        assert [a.title for a in server.apps.ephemeral_apps()].count("basic") == 1
    assert embedded.running() in (None, held)  # stopped with the last app that ran on it


def test_apps_running_at_once_share_it_until_the_last_ends() -> None:
    held = embedded.running()
    with basic.app.run():
        first = embedded.running()
        with warm.app.run():
            assert embedded.running() is first
            titles = [a.title for a in first.apps.ephemeral_apps()]  # type: ignore[union-attr]
            assert {"basic", "warm"} <= set(titles)
        assert embedded.running() is first
        assert basic.echo.remote(1) == 1
    assert embedded.running() in (None, held)


def test_another_process_runs_its_own_app_on_the_same_home_meanwhile(tmp_path: Path) -> None:
    script = tmp_path / "other.py"
    tests = str(Path(__file__).resolve().parents[1])
    script.write_text(textwrap.dedent(OTHER_PROCESS.format(tests=tests)))
    with basic.app.run():
        assert basic.echo.remote("here") == "here"
        other = subprocess.run(
            [sys.executable, str(script)],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "SHOAL_FORK_SERVER": "0"},
        )
        assert basic.echo.remote("still here") == "still here"
    assert other.returncode == 0, other.stderr
    assert other.stdout.splitlines()[-1] == "from the other process"


def test_app_lookup_with_no_server_runs_on_the_embedded_server() -> None:
    script = (
        "import shoal\n"
        "try:\n"
        "    shoal.App.lookup('shoal-test-lookup')\n"
        "except shoal.exception.NotFoundError as exc:\n"
        "    print('missing:', exc)\n"
        "app = shoal.App.lookup('shoal-test-lookup', create_if_missing=True)\n"
        "again = shoal.App.lookup('shoal-test-lookup')\n"
        "print(app.name, app.app_id.startswith('ap-'), again.app_id == app.app_id)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("SHOAL_SERVER_URL", "SHOAL_TOKEN")}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("missing: no app 'shoal-test-lookup'")
    assert lines[1] == "shoal-test-lookup True True"
