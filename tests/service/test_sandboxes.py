"""Sandboxes on a real server: they outlive the client that made them, the CLI lists and
terminates them, and their app's stop ends them."""

from __future__ import annotations

import glob
import json
from pathlib import Path

import pytest

from conftest import wait_until
from service.harness import ServerProcess
from shoal.backends import isolation

pytestmark = pytest.mark.skipif(bool(isolation.problem()), reason=isolation.problem() or "-")

CREATE = """
import shoal
app = shoal.App.lookup("boxes", create_if_missing=True)
named = [shoal.Secret.from_name("box-secret", required_keys=["WORD"])]
sb = shoal.Sandbox.create(
    "sh", "-c", "echo up; echo warned >&2; sleep 60",
    app=app, name="left", tags={"kind": "sleeper"}, secrets=named,
)
assert sb.exec("sh", "-c", "echo $WORD").stdout.read() == "kept\\n"
given = [shoal.Secret.from_dict({"WORD": "given"})]
assert sb.exec("sh", "-c", "echo $WORD", secrets=given).stdout.read() == "given\\n"
print(sb.object_id)
"""

WAIT = """
import shoal
sb = shoal.Sandbox.from_name("boxes", "left")
print("waiting", flush=True)
sb.wait(raise_on_termination=False)
print(sb.returncode, sb.termination_reason)
"""


def _made(server: ServerProcess) -> str:
    """Run CREATE on ``server`` (its named secret made first); the sandbox's id."""
    assert server.cli("secret", "create", "box-secret", "WORD=kept").returncode == 0
    made = server.client(CREATE)
    assert made.returncode == 0, made.stderr
    return made.stdout.split()[-1]


def test_a_sandbox_outlives_its_client_and_the_cli_ends_it(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path).start()
    try:
        object_id = _made(server)
        listed = server.cli("sandbox", "list", "--json", "--tag", "kind=sleeper")
        assert listed.returncode == 0, listed.stderr
        rows = json.loads(listed.stdout)
        assert [(r["object_id"], r["app"], r["name"]) for r in rows] == [
            (object_id, "boxes", "left")
        ]

        def logged() -> tuple[str, str]:
            done = server.cli("sandbox", "logs", object_id)
            return done.stdout, done.stderr

        wait_until(lambda: logged() == ("up\n", "warned\n"), 10, "its own command's lines")
        waiter = server.start_client(WAIT)
        assert waiter.stdout is not None and waiter.stdout.readline() == "waiting\n"
        ended = server.cli("sandbox", "terminate", object_id, "-y")
        assert ended.returncode == 0, ended.stderr
        out, _ = waiter.communicate(timeout=60)
        assert out.split() == ["137", "terminated"]
        assert json.loads(server.cli("sandbox", "list", "--json").stdout) == []
        again = server.client(CREATE)  # its name is free again; its app's stop ends it
        assert again.returncode == 0, again.stderr
        assert server.cli("app", "stop", "boxes", "-y").returncode == 0
        wait_until(
            lambda: json.loads(server.cli("sandbox", "list", "--json").stdout) == [],
            10,
            "the app's stop to end its sandbox",
        )
    finally:
        server.stop()


def test_the_store_keeps_sandboxes_across_a_restart(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path).start()
    try:
        object_id = _made(server)
        assert server.proc is not None
        dead = server.proc.pid
        assert glob.glob(f"/tmp/shoal-sb-{dead}-*")  # the sandbox's own folder
        server.kill()  # a SIGKILLed server: its sandboxes end with it, and it keeps no promise
        wait_until(lambda: not _running("echo warned"), 10, "the sandbox to end with its server")
        server.start()
        assert not glob.glob(f"/tmp/shoal-sb-{dead}-*")  # the next start swept what it left
        every = json.loads(server.cli("sandbox", "list", "--all", "--json").stdout)
        assert [(r["object_id"], r["returncode"], r["reason"]) for r in every] == [
            (object_id, 137, "server stopped")
        ]
        assert r"running" not in server.cli("sandbox", "list", "--all").stdout
        assert json.loads(server.cli("sandbox", "list", "--json").stdout) == []  # none running
        polled = server.client(
            "import shoal\n"
            f"sb = shoal.Sandbox.from_id({object_id!r})\n"
            "print(sb.poll(), sb.returncode, sb.termination_reason)\n"
        )
        assert polled.stdout.split() == ["137", "137", "server", "stopped"], polled.stderr
        assert server.cli("sandbox", "terminate", object_id, "-y").returncode == 0  # a no-op
    finally:
        server.stop()


def _running(text: str) -> bool:
    """Whether a process whose command line holds ``text`` runs."""
    for path in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text in path.read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                return True
        except OSError:
            continue
    return False
