"""Users beside root in sandboxes: an image's build adds them in a jail (never on the
host), a sandbox of that image maps their ids, and the kernel's own permissions hold
between them, root and read-only volumes. Modal's restricted-volumes example runs."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import shoal
from shoal.backends import isolation
from shoal.exception import ImageBuildError

pytestmark = pytest.mark.skipif(
    bool(isolation.users_problem()), reason=isolation.users_problem() or "users work here"
)

ROOT = Path(__file__).resolve().parents[2]


def _as(sb: shoal.Sandbox, user: str, script: str) -> tuple[int, str]:
    p = sb.exec("su", user, "-c", script)
    code = p.wait()
    return code, (p.stdout.read() + p.stderr.read()).strip()


def test_modal_s_restricted_volumes_example_runs(tmp_path: Path) -> None:
    env = {**os.environ, "SHOAL_HOME": str(tmp_path / "home")}
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "sandbox_users.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    said = {line[:26].strip(): line[26:] for line in done.stdout.splitlines() if line[:26].strip()}
    assert said["who runs"].strip() == "exit 0: coder | 1000 | /home/coder"
    assert said["read the reference"].strip() == "exit 0: the answer is 42"
    assert "exit 0" not in said["change the reference"]
    assert "Read-only file system" in said["change the reference"]
    assert "exit 0" not in said["write outside its folder"]
    assert "Permission denied" in said["write outside its folder"]
    assert "exit 0" not in said["become root"]
    assert said["write its own folder"].strip() == "exit 0:"
    assert said["write its home"].strip() == "exit 0: notes"
    assert said["root reads its result"].strip() == "4 words"


def test_build_commands_write_the_image_never_the_host(app: shoal.App) -> None:
    tag = uuid.uuid4().hex[:8]
    user, folder = f"u{tag}", f"/opt/shoal-{tag}"
    image = shoal.Image.debian_slim().run_commands(
        f"useradd --create-home --uid 1200 {user}",
        f"mkdir -p {folder} && echo made > {folder}/file && chown -R {user} {folder}",
    )
    sb = shoal.Sandbox.create(app=app, image=image)
    try:
        p = sb.exec(
            "sh", "-c", f"cat {folder}/file; stat -c %U {folder}/file; getent passwd {user}"
        )
        assert p.wait() == 0, p.stderr.read()
        assert p.stdout.read().split("\n")[:2] == ["made", user]
    finally:
        sb.terminate()
    with open("/etc/passwd") as host:
        assert user not in host.read()  # useradd wrote the image's /etc/passwd
    assert not os.path.exists(folder)  # and mkdir the image's /opt
    with pytest.raises(ImageBuildError, match="Read-only file system"):
        bad = shoal.Image.debian_slim().run_commands(f"touch /usr/bin/shoal-{tag}")
        shoal.Sandbox.create(app=app, image=bad)
    assert not os.path.exists(f"/usr/bin/shoal-{tag}")


def test_users_are_kept_apart_and_from_root(app: shoal.App) -> None:
    image = shoal.Image.debian_slim().run_commands(
        "useradd --create-home --uid 1000 alice", "useradd --create-home --uid 1001 bob"
    )
    sb = shoal.Sandbox.create(app=app, image=image)
    try:
        assert _as(sb, "alice", "echo secret > ~/diary && chmod 600 ~/diary && id -un") == (
            0,
            "alice",
        )
        code, said = _as(sb, "bob", "cat /home/alice/diary")
        assert code != 0 and "Permission denied" in said
        code, said = _as(sb, "bob", "grep -E '^Cap(Eff|Prm)' /proc/self/status; kill -9 -1")
        assert said.splitlines()[:2] == ["CapPrm:\t0000000000000000", "CapEff:\t0000000000000000"]
        root = sb.exec("sh", "-c", "cat /home/alice/diary; grep ^NoNewPrivs /proc/self/status")
        assert root.wait() == 0  # bob's kill -9 -1 reached none of root's processes
        assert root.stdout.read().split("\n")[:2] == ["secret", "NoNewPrivs:\t1"]
        code, said = _as(sb, "alice", "su -c id root < /dev/null")
        assert code != 0 and "uid=0" not in said  # a setuid binary gains nothing
        sleeper = sb.exec("su", "alice", "-c", "sleep 600")
        killer = sb.exec("sh", "-c", "sleep 0.3; pkill -9 -u alice sleep")
        assert killer.wait() == 0  # root inside may signal its users
        assert sleeper.wait() != 0
    finally:
        sb.terminate()
    sb.wait(raise_on_termination=False)
    assert sb.returncode == 137
