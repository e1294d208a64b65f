"""Hostile code in real sandboxes: the host stays healthy, the server keeps serving others,
and nothing leaks (each test is one attack)."""

from __future__ import annotations

import contextlib
import glob
import http.server
import os
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

import shoal
from conftest import wait_until
from shoal.exception import SandboxTerminatedError
from shoal.server import embedded


def _run(sb: shoal.Sandbox, script: str, timeout: float = 60) -> tuple[int, str, str]:
    p = sb.exec("sh", "-c", script, timeout=timeout)
    out, err = p.stdout.read(), p.stderr.read()
    return p.wait(), out, err


def _python(sb: shoal.Sandbox, code: str) -> tuple[int, str, str]:
    """Run ``code`` with the interpreter the sandbox can see (the host's, read-only)."""
    import sys

    p = sb.exec(os.path.realpath(sys.executable), "-I", "-S", "-c", code, timeout=60)
    out, err = p.stdout.read(), p.stderr.read()
    return p.wait(), out, err


@pytest.fixture
def sb(app: shoal.App) -> Iterator[shoal.Sandbox]:
    sandbox = shoal.Sandbox.create(app=app)
    yield sandbox
    sandbox.terminate()


def _healthy(app: shoal.App) -> None:
    """Another sandbox still starts and answers: the server serves others."""
    other = shoal.Sandbox.create(app=app)
    try:
        assert other.exec("echo", "ok").stdout.read() == "ok\n"
    finally:
        other.terminate()


def test_a_fork_bomb_hits_its_pid_limit_and_goes_with_terminate(
    app: shoal.App, sb: shoal.Sandbox
) -> None:
    # It forks until the system refuses, and goes on trying; nothing it started exits.
    import sys

    bomb = sb.exec(
        os.path.realpath(sys.executable),
        "-c",
        "import os, time\n"
        "while True:\n"
        "    try:\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(1000)\n"
        "    except OSError:\n"
        "        time.sleep(0.01)\n",
    )
    time.sleep(3)
    server = embedded.running()
    assert server is not None
    group = server.sandboxes.get(sb.object_id).group
    assert group is not None, "the sandbox has cgroups here"
    with open(os.path.join(group.paths[0], "cgroup.procs")) as found:
        held = len(found.read().split())
    assert 50 < held <= 512  # the bomb ran, and its group held it at its limit
    _healthy(app)
    sb.terminate()
    assert bomb.wait() == 137


def test_a_fork_bomb_in_an_image_build_stops_at_its_limit_and_leaves_nothing(
    app: shoal.App,
) -> None:
    from shoal.exception import ImageBuildError

    spawn = "i=0; while [ $i -lt 4200 ]; do sleep 60 & i=$((i+1)); done; echo all-started"
    with pytest.raises(ImageBuildError, match="Cannot fork"):  # its jail holds 4,096
        shoal.Sandbox.create(app=app, image=shoal.Image.debian_slim().run_commands(spawn))
    wait_until(lambda: not _sleepers(), 10, "the build's processes to end with its jail")
    _healthy(app)


def _sleepers() -> list[str]:
    found = []
    for status in glob.glob("/proc/[0-9]*/cmdline"):
        with contextlib.suppress(OSError), open(status, "rb") as f:
            if f.read() == b"sleep\x0060\x00":
                found.append(status)
    return found


def test_a_memory_bomb_is_reported_as_out_of_memory(app: shoal.App) -> None:
    import sys

    code = "x = bytearray(1 << 30); print('survived')"
    sb = shoal.Sandbox.create(os.path.realpath(sys.executable), "-c", code, app=app, memory=64)
    with pytest.raises(SandboxTerminatedError, match="memory"):
        sb.wait()
    assert sb.termination_reason == "oom" and sb.returncode == 137
    assert "survived" not in sb.stdout.read()
    _healthy(app)


def test_disk_fill_is_capped_and_nothing_survives_into_the_next(
    app: shoal.App, sb: shoal.Sandbox
) -> None:
    code, _, err = _run(sb, "dd if=/dev/zero of=/tmp/fill bs=1M count=1024")
    assert code != 0 and "No space left" in err
    code, _, err = _run(sb, "echo x > /etc/planted; echo y > /usr/planted")
    assert code != 0 and "Read-only" in err
    sb.terminate()
    fresh = shoal.Sandbox.create(app=app)
    try:
        assert _run(fresh, "ls /tmp")[1] == ""
    finally:
        fresh.terminate()


def test_the_host_s_secrets_are_not_there(sb: shoal.Sandbox) -> None:
    import tempfile

    fd, planted = tempfile.mkstemp(dir=os.path.expanduser("~"), prefix=".shoal-host-")
    os.close(fd)
    bundles = os.path.expanduser("~/.cache/shoal")
    try:
        for path in ("/etc/shadow", "/etc/ssl/private", planted, os.getcwd(), bundles, "/var/lib"):
            code, out, _ = _run(sb, f"cat {path} || ls {path}")
            assert code != 0 and out == "", path
    finally:
        os.unlink(planted)
    _, env, _ = _run(sb, "env")
    assert "SHOAL_" not in env and "TOKEN" not in env
    assert "root:x:0:0" in _run(sb, "cat /etc/passwd")[1]  # its own, not the host's
    _, listed, _ = _run(sb, "ls /")
    assert "home" not in listed.split() and "work" not in listed.split()


def test_a_link_planted_inside_cannot_reach_the_host_through_the_file_api(
    sb: shoal.Sandbox, tmp_path: object
) -> None:
    secret = os.path.join(str(tmp_path), "host-secret")
    with open(secret, "w") as out:
        out.write("host only")
    _run(sb, f"ln -s {secret} /tmp/link; ln -s /etc/shadow /tmp/shadow")
    for link in ("/tmp/link", "/tmp/shadow"):
        with pytest.raises(FileNotFoundError):
            sb.filesystem.read_text(link)
    with pytest.raises((FileNotFoundError, shoal.exception.Error)):
        sb.filesystem.write_text("/tmp/link", "overwritten")
    with open(secret) as source:
        assert source.read() == "host only"


def test_the_host_s_loopback_is_unreachable(app: shoal.App) -> None:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    with socketserver.TCPServer(("127.0.0.1", 0), Quiet) as server:
        port = server.server_address[1]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            # 127.0.0.1 is the sandbox's own; 10.0.2.2 is where the user-space stack would
            # lead to the host's loopback, were it not refused.
            probe = (
                "import socket\n"
                "for host in ('127.0.0.1', '10.0.2.2'):\n"
                "    s = socket.socket(); s.settimeout(2)\n"
                f"    print(s.connect_ex((host, {port})))\n"
            )
            for blocked in (True, False):
                sb = shoal.Sandbox.create(app=app, block_network=blocked)
                try:
                    code, out, err = _python(sb, probe)
                    assert code == 0, err
                    assert "0" not in out.split(), f"block_network={blocked}: {out}"
                    interfaces = _run(sb, "cat /proc/net/dev")[1]
                    assert ("eth0" in interfaces) is not blocked  # outbound: an interface
                finally:
                    sb.terminate()
        finally:
            server.shutdown()


def test_a_cidr_allowlist_refuses_every_other_address(app: shoal.App) -> None:
    from shoal.backends import netstack

    why = netstack.allowlist_problem() or netstack.problem()
    if why:
        pytest.skip(why)
    # 10.0.2.0/24 is the user-space stack's own network: a connection there reaches the
    # stack (which refuses 10.0.2.2, the host's loopback, as unreachable: 101); one to any
    # other address is refused inside the sandbox at once (111), so nothing leaves.
    probe = (
        "import socket\n"
        "for host in ('10.0.2.2', '192.0.2.1', '127.0.0.1'):\n"
        "    s = socket.socket(); s.settimeout(5)\n"
        "    print(s.connect_ex((host, 9)))\n"
    )
    sb = shoal.Sandbox.create(app=app, cidr_allowlist=["10.0.2.0/24"])
    try:
        code, out, err = _python(sb, probe)
        assert code == 0, err
        assert out.split() == ["101", "111", "111"]  # its own loopback: nothing listens
    finally:
        sb.terminate()
    with pytest.raises(shoal.exception.InvalidError, match="cidr_allowlist"):
        shoal.Sandbox.create(app=app, cidr_allowlist=["not-a-network"])
    with pytest.raises(shoal.exception.InvalidError, match="choose one"):
        shoal.Sandbox.create(app=app, cidr_allowlist=["10.0.0.0/8"], block_network=True)


def test_kill_minus_one_and_proc_see_only_the_sandbox(app: shoal.App, sb: shoal.Sandbox) -> None:
    pids = _run(sb, "ls /proc | grep '^[0-9]'")[1].split()
    assert 0 < len(pids) < 10 and os.getpid() != 1
    with contextlib.suppress(shoal.exception.Error):  # the agent goes too, maybe first
        _run(sb, "kill -9 -1")
    wait_until(lambda: sb.poll() is not None, 10, "the sandbox to end")
    assert sb.returncode == 137
    _healthy(app)


def test_ptrace_unshare_mount_and_tiocsti_are_refused(sb: shoal.Sandbox) -> None:
    code, out, err = _python(
        sb,
        "import ctypes, errno, fcntl, os, pty, termios\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "def call(nr, *args):\n"
        "    libc.syscall(nr, *args); return ctypes.get_errno()\n"
        "import platform\n"
        "x86 = platform.machine() == 'x86_64'\n"
        "print('ptrace', call(101 if x86 else 117, 16, os.getppid(), 0, 0))\n"
        "print('unshare', call(272 if x86 else 97, 0x10000000))\n"
        "print('mount', call(165 if x86 else 40, b'none', b'/tmp', b'tmpfs', 0, 0))\n"
        "master, slave = pty.openpty()\n"
        "try:\n"
        "    fcntl.ioctl(slave, termios.TIOCSTI, b'x'); print('tiocsti 0')\n"
        "except OSError as e:\n"
        "    print('tiocsti', e.errno)\n",
    )
    assert code == 0, err
    found = dict(line.split() for line in out.splitlines())
    assert found == {"ptrace": "1", "unshare": "1", "mount": "1", "tiocsti": "1"}, out
    assert _run(sb, "unshare -U true")[0] != 0
    assert _run(sb, "mount -t tmpfs none /mnt")[0] != 0


def test_setuid_binaries_gain_nothing(sb: shoal.Sandbox) -> None:
    status = _run(sb, "cat /proc/self/status")[1]
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert fields["NoNewPrivs"].strip() == "1" and fields["CapEff"].strip() == "0" * 16
    assert fields["Seccomp"].strip() == "2"
    setuid = [p for p in ("/usr/bin/su", "/usr/bin/passwd", "/usr/bin/mount") if os.path.exists(p)]
    for binary in setuid:
        code, _, _ = _run(sb, f"{binary} --help >/dev/null 2>&1; {binary} root -c id")
        assert code != 0, binary


def test_a_stdout_flood_stays_bounded(app: shoal.App, sb: shoal.Sandbox) -> None:
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    flood = sb.exec("sh", "-c", "head -c 100000000 /dev/zero | tr '\\0' x; echo; echo end")
    assert flood.wait() == 0  # never held up by a reader that is not reading
    text = flood.stdout.read()
    # What did not fit while nobody read is dropped, with a marker where it went.
    assert text.endswith(" bytes of output dropped]\n")
    assert 8_000_000 <= len(text) < 9_000_000
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown < 200 * 1024  # KiB: the server and client in this process
    _healthy(app)


def test_a_double_forked_setsid_child_does_not_outlive_the_sandbox(app: shoal.App) -> None:
    marker = f"sleep 4{os.getpid() % 1000:03d}"
    for end in ("terminate", "timeout"):
        sb = shoal.Sandbox.create(app=app, timeout=2 if end == "timeout" else 60)
        _run(sb, f"setsid sh -c '{marker} & ' >/dev/null 2>&1 & sleep 0.2")
        wait_until(lambda: _alive(marker), 5, "the escaped child to run")
        if end == "terminate":
            sb.terminate()
        sb.wait(raise_on_termination=False)
        assert sb.returncode == (137 if end == "terminate" else 124)
        wait_until(lambda: not _alive(marker), 10, "nothing of the sandbox to be left")


def _alive(command: str) -> bool:
    for status in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            with open(status, "rb") as source:
                if source.read().replace(b"\0", b" ").strip() == command.encode():
                    return True
        except OSError:
            continue
    return False


def test_fifty_sandboxes_at_once_leave_nothing_behind(app: shoal.App) -> None:
    import asyncio

    def count() -> tuple[int, int]:
        folders = glob.glob("/tmp/shoal-sb-*")
        processes = sum(1 for p in glob.glob("/proc/[0-9]*/cmdline") if _is_jail(p))
        return len(folders), processes

    def groups() -> list[str]:
        return glob.glob("/sys/fs/cgroup/*/**/shoal-*", recursive=True)

    before = count()

    async def one() -> str:
        sb = await shoal.Sandbox.create.aio(app=app)
        out = await (await sb.exec.aio("echo", "up")).stdout.read.aio()
        await sb.terminate.aio()
        return out

    async def all_of_them() -> list[str]:
        return await asyncio.gather(*(one() for _ in range(50)))

    assert asyncio.run(all_of_them()) == ["up\n"] * 50
    wait_until(
        lambda: all(now <= then for now, then in zip(count(), before, strict=True)),
        15,
        "every folder and process to go",
    )
    # Emptied groups are kept for reuse, a bounded few (16 a hierarchy); none holds a process.
    assert len(groups()) <= 16 * 3
    for path in groups():
        with open(os.path.join(path, "cgroup.procs")) as procs:
            assert procs.read() == "", path


def _is_jail(cmdline: str) -> bool:
    """A sandbox's bubblewrap or its network stack."""
    try:
        with open(cmdline, "rb") as source:
            return source.read().split(b"\0")[0].endswith((b"bwrap", b"slirp4netns"))
    except OSError:
        return False
