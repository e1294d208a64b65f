"""Volumes: folders mounted into containers at the paths written, never on the host's root."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import shoal
from portability.runner import run_json
from service.harness import ServerProcess
from shoal.backends import isolation
from shoal.exception import InvalidError, NotFoundError

SCRIPT = Path(__file__).parent / "scripts" / "volumes_app.py"


def _namespaces_work() -> bool:
    probe = "from shoal.container import mounts; mounts._private_namespace()"
    return subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0


#: Mounting volumes needs a mount namespace: root, or unprivileged user namespaces.
needs_namespaces = pytest.mark.skipif(
    not _namespaces_work(), reason="this machine cannot make mount namespaces"
)


def check(out: dict, cwd: str | None = None) -> None:
    assert out["read"] == ["run 1", "run 2"]  # another function's containers saw the writes
    assert out["listed"] == ["1.txt", "2.txt"] and out["content"] == "run 2"
    assert out["on_host"] == [False, False]  # mount points exist only in the containers
    # Its new root still holds its working folder (a jailed container starts in its own).
    assert out["cwd"] == (cwd or os.getcwd())
    assert out["after_rm"] == []


@needs_namespaces
def test_volumes_embedded(tmp_path: Path) -> None:
    env = {**os.environ, "SHOAL_HOME": str(tmp_path / "home")}
    env.pop("SHOAL_SERVER_URL", None)
    check(run_json(SCRIPT, env))
    assert (tmp_path / "home" / "volumes" / "shoal-test-volume").is_dir()
    assert not os.path.exists("/shoal-test-volume-data")


@needs_namespaces
def test_volumes_on_a_server_and_the_cli(server: ServerProcess, tmp_path: Path) -> None:
    check(run_json(SCRIPT, server.env), None if isolation.problem() else "/root")
    local = tmp_path / "upload"
    local.mkdir()
    (local / "a.txt").write_text("alpha")
    (local / "sub").mkdir()
    (local / "sub" / "b.txt").write_text("beta")
    put = server.cli("volume", "put", "shoal-test-volume", str(local), "/up/")
    assert put.returncode == 0, put.stderr
    listed = server.cli("volume", "ls", "shoal-test-volume", "/up", "--json")
    assert sorted(row["path"] for row in json.loads(listed.stdout)) == ["a.txt", "sub"]
    got = server.cli("volume", "get", "shoal-test-volume", "up/sub/b.txt", "-")
    assert got.stdout == "beta"
    escape = server.cli("volume", "get", "shoal-test-volume", "../../token", "-")
    assert escape.returncode != 0 and "leaves volume" in escape.stderr
    kept = server.home / "volumes" / "shoal-test-volume" / "up" / "a.txt"
    assert kept.read_text() == "alpha"  # the server keeps volumes under its home
    check_the_file_commands(server, local)
    refused = server.cli("volume", "delete", "shoal-test-volume")  # no terminal to ask on
    assert refused.returncode == 1 and "--yes" in refused.stderr
    assert "shoal-test-volume" in server.cli("volume", "list").stdout
    assert server.cli("volume", "delete", "shoal-test-volume", "--yes").returncode == 0
    assert "shoal-test-volume" not in server.cli("volume", "list").stdout


def check_the_file_commands(server: ServerProcess, local: Path) -> None:
    """put refuses to overwrite without -f, get saves files and folders as Modal's does,
    and create of a volume that exists says so."""
    again = server.cli("volume", "put", "shoal-test-volume", str(local / "a.txt"), "/up/a.txt")
    assert again.returncode != 0 and "--force" in again.stderr
    (local / "a.txt").write_text("alpha 2")
    forced = server.cli("volume", "put", "-f", "shoal-test-volume", str(local / "a.txt"), "/up/")
    assert forced.returncode == 0, forced.stderr
    here = local.parent / "downloads"
    here.mkdir()
    one = subprocess.run(
        [sys.executable, "-m", "shoal.cli", "volume", "get", "shoal-test-volume", "up/a.txt"],
        env=server.env,
        cwd=here,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert one.returncode == 0, one.stderr
    assert (here / "a.txt").read_text() == "alpha 2"  # no destination: saved here
    folder = server.cli("volume", "get", "shoal-test-volume", "/up", str(here / "tree"))
    assert folder.returncode == 0, folder.stderr
    assert (here / "tree" / "a.txt").read_text() == "alpha 2"
    assert (here / "tree" / "sub" / "b.txt").read_text() == "beta"
    kept = server.cli("volume", "get", "shoal-test-volume", "up/a.txt", str(here))
    assert kept.returncode != 0 and "exists" in kept.stderr
    exists = server.cli("volume", "create", "shoal-test-volume")
    assert exists.returncode != 0 and "already exists" in exists.stderr


def test_bad_volume_options_are_clear_errors() -> None:
    vol = shoal.Volume.from_name("shoal-test-never-made")
    app = shoal.App("bad-volumes")
    with pytest.raises(InvalidError, match="absolute"):
        app.function(volumes={"data": vol})
    with pytest.raises(InvalidError, match="absolute, and not /"):
        app.function(volumes={"/": vol})
    with pytest.raises(InvalidError, match=r"shoal\.Volume"):
        app.function(volumes={"/data": "not-a-volume"})  # type: ignore[dict-item]

    @app.function(volumes={"/data": vol}, serialized=True)
    def f() -> int:
        return 1

    with pytest.raises(NotFoundError, match="shoal-test-never-made"), app.run():
        pass
