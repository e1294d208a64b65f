"""``shoal serve`` as a user runs it: a real process, real HTTP, reload on file change."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx

from conftest import wait_until

APP = """
import shoal

app = shoal.App("served")


@app.function()
@shoal.fastapi_endpoint()
def version() -> dict:
    return {{"version": {version}}}
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _version(url: str) -> int | None:
    try:
        return int(httpx.get(url, timeout=5).json()["version"])
    except (httpx.HTTPError, KeyError, ValueError):
        return None


def _serve(source: Path, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "shoal.cli", "serve", str(source), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "SHOAL_GATEWAY_TOKEN": "t"},
    )


def test_serve_reloads_when_the_file_changes(tmp_path: Path) -> None:
    source = tmp_path / "served_app.py"
    source.write_text(textwrap.dedent(APP.format(version=1)))
    port = _free_port()
    url = f"http://127.0.0.1:{port}/version"
    server = _serve(source, port)
    try:
        wait_until(lambda: _version(url) == 1, timeout=60, what="version 1 served")
        time.sleep(0.05)  # a new mtime, even on coarse file systems
        source.write_text(textwrap.dedent(APP.format(version=2)))
        wait_until(lambda: _version(url) == 2, timeout=60, what="version 2 after reload")
    finally:
        server.terminate()
        server.communicate(timeout=30)


HELPER_APP = """
import shoal
from helper import VERSION

app = shoal.App("served_helper")


@app.function()
@shoal.fastapi_endpoint()
def version() -> dict:
    return {"version": VERSION}
"""


def test_serve_reloads_for_the_app_and_its_local_modules_only(tmp_path: Path) -> None:
    (tmp_path / "helper.py").write_text("VERSION = 1\n")
    (tmp_path / "unrelated.py").write_text("X = 1\n")
    source = tmp_path / "helper_app.py"
    source.write_text(textwrap.dedent(HELPER_APP))
    port = _free_port()
    url = f"http://127.0.0.1:{port}/version"
    server = _serve(source, port)
    try:
        wait_until(lambda: _version(url) == 1, timeout=60, what="version 1 served")
        time.sleep(1)  # the server has listed its files; the watcher picks the list up
        (tmp_path / "unrelated.py").write_text("X = 2\n")  # not imported by the app
        (tmp_path / "new_file.py").write_text("Y = 1\n")
        time.sleep(1.5)  # must NOT reload: a restart would show in the supervisor's log
        (tmp_path / "helper.py").write_text("VERSION = 2\n")
        wait_until(lambda: _version(url) == 2, timeout=60, what="version 2 after reload")
    finally:
        server.terminate()
        _, err = server.communicate(timeout=30)
    assert err.decode().count("change detected") == 1, err.decode()


FAILING_APP = """
import shoal

app = shoal.App("failing")


@app.function()
@shoal.fastapi_endpoint()
def broken() -> dict:
    raise ValueError("the handler broke")
"""


def test_a_web_apps_exception_reaches_the_output_and_the_endpoint_has_its_own_port(
    tmp_path: Path,
) -> None:
    source = tmp_path / "failing_app.py"
    source.write_text(textwrap.dedent(FAILING_APP))
    port = _free_port()
    server = _serve(source, port)
    try:
        wait_until(
            lambda: _status(f"http://127.0.0.1:{port}/broken") == 500, timeout=60, what="a 500"
        )
    finally:
        server.terminate()
        out, err = server.communicate(timeout=30)
    assert "ValueError: the handler broke" in err.decode()  # the traceback, not only a 500
    assert "Exception in web app (http /)" in err.decode()
    # listed with its own origin (the port after the gateway's, when that one is free)
    assert "broken: http://127.0.0.1:" in out.decode()


def _status(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=5).status_code
    except httpx.HTTPError:
        return None


def test_a_taken_port_is_a_one_line_error(tmp_path: Path) -> None:
    source = tmp_path / "served_app.py"
    source.write_text(textwrap.dedent(APP.format(version=1)))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        command = [sys.executable, "-m", "shoal.cli", "serve", str(source), "--port", str(port)]
        runs = [
            subprocess.run(command + reload, capture_output=True, text=True, timeout=120)
            for reload in (["--no-reload"], [])  # the reloading supervisor stops too
        ]
    for done in runs:
        assert done.returncode != 0
        assert f"Error: the gateway could not listen on 127.0.0.1:{port}" in done.stderr
        assert "Traceback" not in done.stderr
