"""``shoal container exec``: a command inside a running function container of a real
server, isolated as the container is, its output streamed and its exit code kept."""

from __future__ import annotations

import json
import time

from service.harness import ServerProcess
from shoal.backends import isolation


def _a_running_container(server: ServerProcess) -> str:
    done = server.client(
        "import shoal\n"
        "f = shoal.Function.from_name('svc', 'square')\n"
        "f.update_autoscaler(min_containers=1)\n"
        "print(f.remote(3))\n"
    )
    assert done.returncode == 0, done.stderr
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        listed = server.cli("container", "list", "--json")
        rows = [r for r in json.loads(listed.stdout) if r["state"] == "ready"]
        if rows:
            return str(rows[0]["id"])
        time.sleep(0.2)
    raise AssertionError("no container came up")


def test_exec_runs_inside_the_container_and_keeps_its_code(deployed: ServerProcess) -> None:
    container_id = _a_running_container(deployed)
    script = 'echo out; echo err >&2; hostname; test -e "$1/token" && echo SEES-TOKEN; exit 3'
    done = deployed.cli(
        "container", "exec", container_id, "--", "sh", "-c", script, "sh", str(deployed.home)
    )
    assert done.returncode == 3, done.stderr
    assert done.stdout.splitlines()[0] == "out" and "err" in done.stderr
    if not isolation.problem():  # isolated as the container is: its jail's name, no token
        assert done.stdout.splitlines()[1] == "container"
        assert "SEES-TOKEN" not in done.stdout
    # A command its timeout ends: 124, with a line that says why.
    slow = deployed.cli("container", "exec", container_id, "--timeout", "1", "--", "sleep", "60")
    assert slow.returncode == 124 and "timeout" in slow.stderr
    # Many lines arrive whole and in order.
    many = deployed.cli("container", "exec", container_id, "--", "seq", "1", "20000")
    assert many.returncode == 0 and many.stdout.split() == [str(n) for n in range(1, 20001)]
    # What is not there says so.
    missing = deployed.cli("container", "exec", container_id, "--", "no-such-program")
    assert missing.returncode == 127 and "no-such-program" in missing.stderr
    unknown = deployed.cli("container", "exec", "svc.v1.nothing-c9", "--", "true")
    assert unknown.returncode != 0 and "no running container" in unknown.stderr
