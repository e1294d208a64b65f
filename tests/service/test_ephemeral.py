"""``shoal run`` against a server: the app runs there as an ephemeral app, which ends
with the command (or, detached, once its inputs are done)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from conftest import wait_until
from service.harness import ServerProcess


def _ephemeral_apps(server: ServerProcess) -> list[dict[str, object]]:
    listed = server.cli("app", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    return [row for row in json.loads(listed.stdout) if row["state"] != "deployed"]


def _containers(server: ServerProcess) -> list[dict[str, object]]:
    listed = server.cli("container", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows: list[dict[str, object]] = json.loads(listed.stdout)
    return rows


def test_shoal_run_runs_the_app_on_the_server_and_ends_it(server: ServerProcess) -> None:
    done = server.cli("run", "-q", str(server.apps / "run_app.py"))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "sum 90" in lines
    assert "counter 6" in lines
    assert "variant 8" in lines
    assert "web elsewhere True" in lines  # served by the server's gateway, run in its container
    assert "running as ap-" in done.stderr
    wait_until(lambda: not _ephemeral_apps(server), 30, "the ephemeral app to end")
    wait_until(lambda: not _containers(server), 30, "its containers to stop")
    (url,) = [line.removeprefix("web url ") for line in lines if line.startswith("web url ")]
    with pytest.raises(httpx.ConnectError):  # its endpoint's own port closed with it
        httpx.get(url, timeout=10)


def test_shoal_run_shows_what_the_containers_print_and_the_image_build(
    server: ServerProcess,
) -> None:
    env = {**server.env, "RUN_TAG": uuid.uuid4().hex}
    done = subprocess.run(
        [sys.executable, "-m", "shoal.cli", "run", "-q", str(server.apps / "chatty_run.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    assert "result HELLO" in out
    assert "[shout-c1] out: hello" in out  # on the terminal that ran it, as with no server
    assert "[shout-c1] err: hello" in done.stderr.splitlines()
    built = [line for line in out if line.startswith("[image ")]
    assert built and built[0].endswith("building: python default"), out
    assert built[-1].endswith("] built"), out
    assert out.index(built[-1]) < out.index("result HELLO")


def test_a_detached_run_lets_its_inputs_finish(server: ServerProcess, tmp_path: Path) -> None:
    marker = tmp_path / "slow-done"
    started = time.monotonic()
    done = server.cli(
        "run",
        "-q",
        "--detach",
        str(server.apps / "run_app.py"),
        "--mode",
        "spawn",
        "--path",
        str(marker),
    )
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 60
    assert _mark(server, marker) is None  # the command returned before the input ended
    object_id = next(line.split()[1] for line in done.stdout.splitlines() if "spawned" in line)
    rows = _ephemeral_apps(server)
    assert [row["state"] for row in rows] == ["stopping"]  # draining its one input
    fetched = server.client(
        f"import shoal; print(shoal.FunctionCall.from_id({object_id!r}).get(timeout=60))"
    )
    assert fetched.stdout.strip() == "slept", fetched.stderr
    assert _mark(server, marker) == "done"
    wait_until(lambda: not _ephemeral_apps(server), 30, "the detached app to end")
    wait_until(lambda: not _containers(server), 30, "its containers to stop")


def test_a_server_running_on_the_home_is_found_and_the_app_ends_with_the_command(
    server: ServerProcess, tmp_path: Path
) -> None:
    marker = tmp_path / "never"
    env = {k: v for k, v in server.env.items() if k not in ("SHOAL_SERVER_URL", "SHOAL_TOKEN")}
    env["SHOAL_HOME"] = str(server.home)  # no URL, no token, no profile: found by its home
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "shoal.cli",
            "run",
            "-q",
            str(server.apps / "run_app.py"),
            "--mode",
            "spawn",
            "--path",
            str(marker),
            "--seconds",
            "30",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "running as ap-" in done.stderr
    wait_until(lambda: not _ephemeral_apps(server), 30, "the app to end")
    # The spawned input (30 s) outlives the app's shutdown grace: stopped, it never ends.
    wait_until(lambda: not _containers(server), 30, "its containers to stop")
    assert _mark(server, marker) is None
    assert os.path.exists(server.home / "shoal.db")


def _mark(server: ServerProcess, marker: Path) -> str | None:
    """What ``run_app.slow`` marked for ``marker`` in the server's Dict (None: nothing)."""
    done = server.client(
        "import json, shoal\n"
        "marks = shoal.Dict.from_name('runner-marks', create_if_missing=True)\n"
        f"print(json.dumps(marks.get({str(marker)!r})))"
    )
    assert done.returncode == 0, done.stderr
    found: str | None = json.loads(done.stdout.strip().splitlines()[-1])
    return found
