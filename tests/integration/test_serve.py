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


def test_serve_reloads_when_the_file_changes(tmp_path: Path) -> None:
    source = tmp_path / "served_app.py"
    source.write_text(textwrap.dedent(APP.format(version=1)))
    port = _free_port()
    url = f"http://127.0.0.1:{port}/version"
    server = subprocess.Popen(
        [sys.executable, "-m", "shoal.cli", "serve", str(source), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "SHOAL_GATEWAY_TOKEN": "t"},
    )
    try:
        wait_until(lambda: _version(url) == 1, timeout=60, what="version 1 served")
        time.sleep(0.05)  # a new mtime, even on coarse file systems
        source.write_text(textwrap.dedent(APP.format(version=2)))
        wait_until(lambda: _version(url) == 2, timeout=60, what="version 2 after reload")
    finally:
        server.terminate()
        server.communicate(timeout=30)
