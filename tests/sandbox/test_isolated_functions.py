"""Function containers of a real ``shoal server``, which isolates them by default where
bubblewrap works: what the host keeps from them, and that they still work as before."""

from __future__ import annotations

import glob
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.harness import ServerProcess

APP = Path(__file__).parent / "apps" / "jailed_app.py"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    instance = ServerProcess(tmp_path)
    shutil.copy(APP, instance.apps / APP.name)
    instance.start()
    try:
        instance.deploy(APP.name)
        yield instance
    finally:
        instance.stop()


def _call(server: ServerProcess, code: str) -> object:
    done = server.client("import json, shoal\n" + code)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_container_sees_nothing_of_the_server_s(server: ServerProcess) -> None:
    bundles = server.home / "bundles"
    assert bundles.is_dir()  # the deployed app's bundle is there, on the host
    seen = _call(
        server,
        "f = shoal.Function.from_name('jailed', 'look')\n"
        f"print(json.dumps(f.remote({str(server.home)!r}, {server.port}, {str(bundles)!r})))",
    )
    assert seen == {
        "shadow": False,
        "token": False,
        "home": False,
        "other bundles": False,
        "server port": False,
        "processes": seen["processes"],  # its own namespace's: checked below
        "no new privs": "1",
        "seccomp": "2",
        "capabilities": "0" * 16,
        "wrote root": False,
        "token env": [],
    }
    assert isinstance(seen["processes"], int) and seen["processes"] < 10
    assert "isolation is off" not in server.log.read_text()


def test_isolated_containers_still_map_and_start_from_their_fork_server(
    server: ServerProcess,
) -> None:
    results = _call(
        server,
        "f = shoal.Function.from_name('jailed', 'square')\n"
        "print(json.dumps(list(f.map(range(200)))))",
    )
    assert results == [x * x for x in range(200)]
    # Forked inside the jail: a container's pid is small, in its jail's namespace.
    pids = _call(
        server,
        "f = shoal.Function.from_name('jailed', 'pid')\nprint(json.dumps(f.remote()))",
    )
    assert isinstance(pids, int) and pids < 100


def test_a_function_makes_and_uses_sandboxes_of_its_own_app_only(server: ServerProcess) -> None:
    other = _call(
        server,
        "sb = shoal.Sandbox.create(app=shoal.App.lookup('elsewhere', create_if_missing=True))\n"
        "print(json.dumps(sb.object_id))",
    )
    # A secret of the server's that the function was not given: a sandbox cannot name it.
    assert server.cli("secret", "create", "server-wide", "KEY=value").returncode == 0
    seen = _call(
        server,
        "f = shoal.Function.from_name('jailed', 'in_a_sandbox')\n"
        f"print(json.dumps(f.remote({other!r})))",
    )
    assert isinstance(seen, dict)
    assert str(seen.pop("named secret")).startswith("code in a container cannot name secrets")
    assert seen.pop("image") == "code in a container cannot give a sandbox an image"
    assert seen == {
        "out": "42\n",
        "code": 0,
        "listed": True,
        "other": f"no sandbox {other!r} of this app",
    }
    still = _call(server, f"print(json.dumps(shoal.Sandbox.from_id({other!r}).poll()))")
    assert still is None  # the other app's sandbox runs on, untouched


def test_a_memory_limit_is_the_kernel_s_and_its_kill_says_out_of_memory(
    server: ServerProcess,
) -> None:
    from shoal.backends import cgroups

    if not cgroups.version():
        pytest.skip(cgroups.available())
    within = _call(server, "print(shoal.Function.from_name('jailed', 'hog').remote(32))")
    assert within == 32
    done = server.client(
        "import shoal\n"
        "try:\n"
        "    shoal.Function.from_name('jailed', 'hog').remote(1024)\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__)\n"
    )
    assert done.stdout.strip().endswith("Error"), done.stderr
    logs = server.cli("app", "logs", "jailed")
    assert "shoal: killed: out of memory (over 256 MiB)" in logs.stdout + logs.stderr


def test_a_stopped_server_leaves_no_jail_behind(tmp_path: Path) -> None:
    instance = ServerProcess(tmp_path)
    shutil.copy(APP, instance.apps / APP.name)
    instance.start()
    try:
        instance.deploy(APP.name)
        assert _call(instance, "print(shoal.Function.from_name('jailed', 'square').remote(4))")
        assert instance.proc is not None
        pid = instance.proc.pid
        assert glob.glob(f"/tmp/shoal-jail-{pid}-*")  # its fork server's jail, while it runs
    finally:
        instance.stop()
    assert not glob.glob(f"/tmp/shoal-jail-{pid}-*")
    assert not glob.glob(f"/sys/fs/cgroup/*/**/shoal-pool-{pid}-*", recursive=True)


def test_isolation_off_says_so_at_start(tmp_path: Path) -> None:
    instance = ServerProcess(tmp_path, args=("--isolation", "off")).start()
    try:
        assert "warning: isolation is off" in instance.log.read_text()
    finally:
        instance.stop()


def test_image_build_commands_write_the_image_not_the_host(server: ServerProcess) -> None:
    made = _call(server, "print(json.dumps(shoal.Function.from_name('jailed', 'built').remote()))")
    assert made == {"version": "v1", "user": "shoal-jailed-user"}
    with open("/etc/passwd") as host:
        assert "shoal-jailed-user" not in host.read()
    assert not Path("/opt/shoal-jailed-tool").exists()
