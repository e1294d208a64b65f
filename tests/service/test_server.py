"""A real server process, a deployed app, and clients in other processes."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shutil
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgpack
import pytest

import shoal
from conftest import wait_until
from service.harness import ServerProcess, free_port

CALLS = """
import shoal
from shoal.exception import NotFoundError
square = shoal.Function.from_name("svc", "square")
assert square.remote(7) == 49
assert list(square.map(range(100))) == [i * i for i in range(100)]
assert list(shoal.Function.from_name("svc", "count").remote_gen(4)) == [0, 1, 2, 3]
try:
    shoal.Function.from_name("svc", "refuse").remote("no")
except Exception as exc:
    assert type(exc).__name__ == "Refused" and str(exc) == "no", repr(exc)
else:
    raise AssertionError("refuse did not raise")
Greeter = shoal.Cls.from_name("svc", "Greeter")
assert Greeter(name="ann").hello.remote("bob") == "ann greets bob"
assert Greeter().hello.remote("bob") == "anon greets bob"
for app, name in (("svc", "missing"), ("nope", "square")):
    try:
        shoal.Function.from_name(app, name)
    except NotFoundError as exc:
        print("not found:", exc)
    else:
        raise AssertionError("no NotFoundError")
stats = square.stats()
assert stats.containers >= 1, stats
print("origin:", shoal.Function.from_name("svc", "version").get_web_url())
square.spawn_map(range(20))
print("ok")
"""


def test_deployed_functions_are_called_by_name_from_another_process(
    deployed: ServerProcess,
) -> None:
    done = deployed.client(CALLS)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("not found:") == 2
    assert "ok" in done.stdout
    reply = httpx.get(f"{deployed.http}/svc/version", timeout=10)
    assert reply.json() == {"version": 1}
    # get_web_url() names the endpoint's own origin: its root is the endpoint's root
    origin = _origin(done.stdout)
    assert origin.startswith("http://127.0.0.1:") and origin != deployed.http
    assert httpx.get(origin, timeout=10).json() == {"version": 1}


def test_spawned_call_is_fetched_by_id_after_the_spawner_exits(deployed: ServerProcess) -> None:
    spawner = deployed.client(
        "import shoal\n"
        "call = shoal.Function.from_name('svc', 'slow').spawn(1.0)\n"
        "print(call.object_id)\n"
    )
    assert spawner.returncode == 0, spawner.stderr
    object_id = spawner.stdout.strip()
    assert object_id.startswith("fc-")
    fetcher = deployed.client(
        "import shoal, sys\n"
        f"print(shoal.FunctionCall.from_id({object_id!r}).get(timeout=30))\n"
        "from shoal.exception import NotFoundError\n"
        "try:\n"
        "    shoal.FunctionCall.from_id('fc-nosuchcall').get(timeout=5)\n"
        "except NotFoundError:\n"
        "    print('unknown id: NotFoundError')\n"
    )
    assert fetcher.returncode == 0, fetcher.stderr
    assert fetcher.stdout.startswith("slept 1.0 in ")
    assert "unknown id: NotFoundError" in fetcher.stdout


SPAWN_MANY = """
import asyncio, shoal
work = shoal.Function.from_name("svc", "work")

async def main():
    ids = []
    for start in range(0, {n}, 500):
        calls = await asyncio.gather(*(work.spawn.aio(0.05) for _ in range(500)))
        ids += [c.object_id for c in calls]
    print("\\n".join(ids))

asyncio.run(main())
"""

GATHER = """
import shoal, sys
ids = open(sys.argv[1]).read().split()
results = shoal.FunctionCall.gather(*(shoal.FunctionCall.from_id(i) for i in ids))
assert all(r == "worked 0.05" for r in results), set(results)
print(len(results))
"""


def test_every_accepted_spawn_completes_after_the_server_is_killed(
    deployed: ServerProcess, tmp_path: Path
) -> None:
    n = 10_000
    spawner = deployed.client(SPAWN_MANY.format(n=n), timeout=300)
    assert spawner.returncode == 0, spawner.stderr
    ids = spawner.stdout.split()
    assert len(ids) == n and len(set(ids)) == n
    stats = deployed.client(
        "import shoal; s = shoal.Function.from_name('svc', 'work').stats(); "
        "print(s.running, s.queued)"
    )
    running, queued = map(int, stats.stdout.split())
    assert running > 0 and queued > 0, stats.stdout  # at most 2 x 50 run at once
    deployed.kill()  # some done, some running, most queued: every one was accepted
    deployed.start()
    listed = tmp_path / "ids.txt"
    listed.write_text("\n".join(ids))
    done = subprocess.run(
        [sys.executable, "-c", GATHER, str(listed)],
        env=deployed.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(n)


def _origin(stdout: str) -> str:
    (line,) = [line for line in stdout.splitlines() if line.startswith("origin: ")]
    return line.removeprefix("origin: ")


ORIGIN = "import shoal; print('origin:', shoal.Function.from_name('svc', 'version').get_web_url())"


def test_deployments_survive_a_restart(deployed: ServerProcess) -> None:
    origin = _origin(deployed.client(ORIGIN).stdout)
    deployed.stop()
    deployed.start()
    done = deployed.client(
        "import shoal; print(shoal.Function.from_name('svc', 'square').remote(9))"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "81"
    # a deployed endpoint keeps its own port across restarts
    assert _origin(deployed.client(ORIGIN).stdout) == origin
    assert httpx.get(origin, timeout=30).json() == {"version": 1}
    assert deployed.cli("app", "stop", "svc", "--yes").returncode == 0
    with pytest.raises(httpx.ConnectError):  # its port closed with it
        httpx.get(origin, timeout=10)


def test_two_clients_share_one_pool(deployed: ServerProcess) -> None:
    code = (
        "import shoal\n"
        "slow = shoal.Function.from_name('svc', 'slow')\n"
        "print(len(list(slow.map([0.3] * 50))))\n"
        "print(slow.stats().containers_started)\n"
    )
    first = subprocess.Popen(
        [sys.executable, "-c", code], env=deployed.env, stdout=subprocess.PIPE, text=True
    )
    second = deployed.client(code)
    out, _ = first.communicate(timeout=60)
    assert second.returncode == 0, second.stderr
    assert out.split()[0] == "50" and second.stdout.split()[0] == "50"
    # max_inputs=100: 100 inputs at once fit in one container, whichever client sent them
    assert int(second.stdout.split()[1]) == 1
    assert int(out.split()[1]) == 1


def test_a_client_that_disconnects_mid_call_leaves_the_server_healthy(
    deployed: ServerProcess,
) -> None:
    caller = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import shoal; shoal.Function.from_name('svc', 'nap').remote(60)",
        ],
        env=deployed.env,
    )
    stats = (
        "import shoal; s = shoal.Function.from_name('svc', 'nap').stats(); "
        "print(s.running, s.queued)"
    )
    wait_until(lambda: deployed.client(stats).stdout.split()[0] == "1", 30, "the call to run")
    caller.kill()
    caller.wait()
    # the call's input is cancelled (an async one stops at once): nothing runs for a
    # caller that is gone
    wait_until(lambda: deployed.client(stats).stdout.split() == ["0", "0"], 20, "the cancel")
    done = deployed.client(
        "import shoal; print(shoal.Function.from_name('svc', 'square').remote(3))"
    )
    assert done.stdout.strip() == "9"


def _frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def test_auth_comes_first_and_bad_peers_cannot_stall_others(deployed: ServerProcess) -> None:
    wrong = deployed.env | {"SHOAL_TOKEN": "not-the-token"}
    done = subprocess.run(
        [sys.executable, "-c", "import shoal; shoal.Function.from_name('svc', 'square')"],
        env=wrong,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and "AuthError" in done.stderr
    peers = []
    # silent peers, garbage, a 2 GB frame claim, and a pickle where the hello should be
    for payload in (
        b"",
        b"\x00\x01garbage" * 100,
        struct.pack(">I", 2**31),
        _frame(msgpack.packb([18, "x", "y"])),
        _frame(b"\x80\x04\x95" + b"cos\nsystem\n(S'touch /tmp/pwned'\ntR."),
    ):
        sock = socket.create_connection(("127.0.0.1", deployed.port))
        if payload:
            sock.sendall(payload)
        peers.append(sock)
    started = time.monotonic()
    done = deployed.client(
        "import shoal; print(shoal.Function.from_name('svc', 'square').remote(5))"
    )
    assert done.stdout.strip() == "25", done.stderr
    assert time.monotonic() - started < 30
    for sock in peers[1:]:  # every bad peer was closed without an answer
        sock.settimeout(10)
        assert sock.recv(100) == b""
    for sock in peers:
        sock.close()
    assert deployed.proc is not None and deployed.proc.poll() is None


def test_redeploy_under_http_load_fails_no_request(deployed: ServerProcess) -> None:
    failures: list[str] = []
    versions: set[int] = set()
    stop = threading.Event()

    origin = _origin(deployed.client(ORIGIN).stdout)

    def load(url: str) -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                try:
                    reply = client.get(url)
                    if reply.status_code != 200:
                        failures.append(f"{reply.status_code} {reply.text}")
                    else:
                        versions.add(reply.json()["version"])
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))

    urls = [f"{deployed.http}/svc/version", origin] * 2  # the gateway's port and its own
    threads = [threading.Thread(target=load, args=(url,)) for url in urls]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    helper = deployed.apps / "service_helper.py"
    helper.write_text(helper.read_text().replace("VERSION = 1", "VERSION = 2"))
    out = deployed.deploy()
    assert "version 2" in out
    wait_until(lambda: 2 in versions, 30, "the new version to answer")
    time.sleep(0.5)
    stop.set()
    for thread in threads:
        thread.join()
    assert failures == []
    assert versions == {1, 2}
    # The old version's containers went once it drained, and the logs say why.
    wait_until(
        lambda: "shoal: stopped (redeploy)" in deployed.cli("app", "logs", "svc").stderr,
        30,
        "the old version's containers to stop",
    )
    logs = deployed.cli("app", "logs", "svc").stderr
    assert re.search(r"\[svc\.v1\.\w+-c\d+\] shoal: ready after \d+ ms", logs), logs


def test_schedules_fire_on_a_deployed_app_and_app_stop_ends_them(deployed: ServerProcess) -> None:
    def ticks() -> int:
        done = deployed.client("import shoal; print(shoal.Dict.from_name('svc-ticks').len())")
        return int(done.stdout) if done.returncode == 0 else 0  # none yet: no Dict yet

    wait_until(lambda: ticks() >= 2, 30, "two ticks")
    done = deployed.cli("app", "stop", "svc", "--yes")
    assert done.returncode == 0, done.stderr
    time.sleep(0.5)
    seen = ticks()
    time.sleep(2.5)
    assert ticks() == seen
    listed = deployed.cli("app", "list")
    assert "stopped" in listed.stdout
    history = deployed.cli("app", "history", "svc")
    assert history.stdout.startswith("v1")


def test_app_logs_prints_and_follows_container_output(deployed: ServerProcess) -> None:
    square = "import shoal; print(shoal.Function.from_name('svc', 'square').remote({}))"
    called = deployed.client(square.format(3))
    assert called.stdout.strip() == "9", called.stderr
    wait_until(lambda: "squaring 3" in deployed.cli("app", "logs", "svc").stdout, 10, "the line")
    line = next(
        x for x in deployed.cli("app", "logs", "svc").stdout.splitlines() if "squaring 3" in x
    )
    assert line.startswith("[svc.v1.square-c"), line  # app, version, function, container
    follower = subprocess.Popen(
        [sys.executable, "-m", "shoal.cli", "app", "logs", "svc", "-f"],
        env=deployed.env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert follower.stdout is not None
        assert "squaring 3" in follower.stdout.readline()  # what was kept comes first
        deployed.client(square.format(7))
        assert "squaring 7" in follower.stdout.readline()  # then what comes next
    finally:
        follower.terminate()
        follower.communicate(timeout=10)
    missing = deployed.cli("app", "logs", "nope")
    assert missing.returncode != 0 and "no deployed app 'nope'" in missing.stderr


def _read_squares(lines: queue.Queue[str], wanted: set[int]) -> set[int]:
    """Take ``lines`` until every number in ``wanted`` was squared there (30 s at most);
    return every number seen. The inputs run on threads, whose prints may share a line
    (even split one), so numbers are counted, not lines."""
    seen: set[int] = set()
    text: list[str] = []
    while not wanted <= seen:
        try:
            line = lines.get(timeout=30)
        except queue.Empty:
            raise AssertionError(f"missing {sorted(wanted - seen)} in {text}") from None
        text.append(line)
        seen.update(int(x) for x in re.findall(r"\d+", line.partition("] ")[2]))
    return seen


def test_app_logs_follow_carries_on_across_a_server_restart(deployed: ServerProcess) -> None:
    square = "import shoal; print(list(shoal.Function.from_name('svc', 'square').map({})))"
    follower = subprocess.Popen(
        [sys.executable, "-m", "shoal.cli", "app", "logs", "svc", "-f"],
        env=deployed.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert follower.stdout is not None
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(
            target=lambda: [lines.put(x) for x in follower.stdout], daemon=True
        ).start()
        # Enough lines before the restart that a cursor counting from 1 again would skip
        # every line after it.
        done = deployed.client(square.format("range(100, 130)"))
        assert done.returncode == 0, done.stderr
        _read_squares(lines, set(range(100, 130)))
        deployed.kill()
        deployed.start()
        done = deployed.client(square.format("[900, 901, 902]"))
        assert done.returncode == 0, done.stderr
        again = _read_squares(lines, {900, 901, 902})
        assert not again & set(range(100, 130))  # nothing from before the restart again
    finally:
        follower.terminate()
        _, err = follower.communicate(timeout=10)
    assert "[shoal] following again: the server restarted" in err, err


def test_the_server_never_unpickles_what_a_container_sends(
    deployed: ServerProcess, tmp_path: Path
) -> None:
    marks = tmp_path / "unpickled-by"
    marks.mkdir()
    done = deployed.client(
        "import shoal\n"
        "trip = shoal.Function.from_name('svc', 'trip')\n"
        "try:\n"
        f"    trip.remote({str(marks)!r})\n"
        "except Exception as exc:\n"
        "    print('raised', type(exc).__name__)\n"
    )
    assert done.stdout.startswith("raised"), done.stderr
    assert deployed.proc is not None
    unpickled_by = {int(name) for name in os.listdir(marks)}
    assert deployed.proc.pid not in unpickled_by  # only the caller ran the exception's code


def test_a_server_s_containers_get_none_of_its_environment(tmp_path: Path) -> None:
    admin = "server-admin-token-" + "x" * 20
    server = ServerProcess(tmp_path, {"SHOAL_TOKEN": admin, "OPERATOR_SECRET": "leak"}).start()
    try:
        server.deploy()
        done = server.client(
            "import json, shoal\n"
            "print(json.dumps(shoal.Function.from_name('svc', 'environment').remote()))"
        )
        assert done.returncode == 0, done.stderr
        seen = json.loads(done.stdout)
    finally:
        server.stop()
    assert not {"SHOAL_TOKEN", "SHOAL_SERVER_URL", "OPERATOR_SECRET", "SHOAL_HOME"} & set(seen)
    assert not [name for name, value in seen.items() if admin in value]
    assert seen["SHOAL_CONTAINER_TOKEN"] != admin  # its own narrow token
    assert "PATH" in seen


def test_a_container_s_token_reaches_its_own_app_only(deployed: ServerProcess) -> None:
    deployed.deploy("other_app.py")
    spawned = deployed.client(
        "import shoal\n"
        "call = shoal.Function.from_name('other', 'private').spawn(1)\n"
        "print(call.object_id, call.get(timeout=60))"
    )
    assert spawned.returncode == 0, spawned.stderr
    other_call, result = spawned.stdout.split()
    assert result == "2"
    own_call = deployed.client(
        "import shoal; print(shoal.Function.from_name('svc', 'square').spawn(3).object_id)"
    ).stdout.strip()

    bundles = _bundles(deployed)

    def probe(function: str, object_id: str, bundle: str, app: str = "") -> dict[str, str]:
        done = deployed.client(
            "import json, shoal\n"
            "probe = shoal.Function.from_name('svc', 'probe')\n"
            f"print(json.dumps(probe.remote({function!r}, {object_id!r}, {bundle!r}, {app!r})))"
        )
        assert done.returncode == 0, done.stderr
        answers: dict[str, str] = json.loads(done.stdout)
        return answers

    own = probe("square", own_call, bundles["svc"])  # the same probe, on its own: allowed
    assert (own["call"], own["wait"], own["fetch"]) == ("ok", "ok", "ok")
    other = probe("other.v1.private", other_call, bundles["other"])
    assert "no function 'other.v1.private'" in other["call"]
    assert f"no function call {other_call!r} in this app" in other["wait"]
    assert "for this container to fetch" in other["fetch"]  # another app's code
    named = probe("private", other_call, bundles["other"], "other")  # the app by its name
    assert "no app 'other' for code in this container" in named["call"]
    for refused in (own["deploy"], own["secrets"], other["deploy"]):
        assert "is not available to code inside a container" in refused


def _bundles(server: ServerProcess) -> dict[str, str]:
    """The digest of each deployed app's current code bundle, from the server's store."""
    with contextlib.closing(sqlite3.connect(server.home / "shoal.db")) as db:
        rows = db.execute(
            "SELECT v.app, v.bundle FROM versions v JOIN apps a"
            " ON a.name = v.app AND a.version = v.version"
        ).fetchall()
    return dict(rows)


@pytest.fixture
def unisolated(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server whose containers are plain processes (``--isolation off``)."""
    instance = ServerProcess(tmp_path, args=("--isolation", "off")).start()
    try:
        yield instance
    finally:
        instance.stop()


def test_a_container_fetches_its_code_by_digest_when_its_machine_lacks_it(
    unisolated: ServerProcess,
) -> None:
    # A plain container finds its bundle itself (a jailed one sees the folder its backend
    # bound into its jail when the jail started).
    deployed = unisolated
    deployed.deploy("other_app.py")
    where = "import shoal; print(shoal.Function.from_name('other', 'where').remote())"
    first = deployed.client(where)
    assert first.returncode == 0, first.stderr
    unpacked = deployed.home / "bundles" / _bundles(deployed)["other"][:32]
    assert first.stdout.strip() == str(unpacked / "other_app.py")  # found on this machine
    shutil.rmtree(unpacked)  # as on a machine that has never seen this app
    listed = json.loads(deployed.cli("container", "list", "--json").stdout)
    for row in listed:
        if row["id"].startswith("other.v") and ".where-" in row["id"]:
            deployed.cli("container", "stop", row["id"], "--yes")
    wait_until(
        lambda: (
            not [
                row
                for row in json.loads(deployed.cli("container", "list", "--json").stdout)
                if ".where-" in row["id"]
            ]
        ),
        timeout=30,
        what="the container to stop",
    )
    again = deployed.client(where)  # a new container: it fetches the bundle, checks, unpacks
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == first.stdout.strip()
    assert (unpacked / "other_app.py").is_file()


def test_current_function_call_id_is_the_spawn_id(deployed: ServerProcess) -> None:
    done = deployed.client(
        "import shoal\n"
        "f = shoal.Function.from_name('svc', 'whoami')\n"
        "call = f.spawn()\n"
        "print(call.object_id, call.get(timeout=60))\n"
        "print(f.remote())\n"
    )
    assert done.returncode == 0, done.stderr
    spawned, plain = done.stdout.splitlines()
    object_id, seen = spawned.split()
    assert object_id.startswith("fc-") and seen == object_id
    assert plain.startswith("svc.v1.whoami-") or plain.startswith("in-"), plain
    assert shoal.current_function_call_id() is None  # not inside a container


LINES = """
import os, signal, sys, threading, time
import shoal
from shoal.client import direct_line
square = shoal.Function.from_name("svc", "square")
nap = shoal.Function.from_name("svc", "nap")
# blocking calls from plain threads: each call borrows a line of its own to the server
results = []
def call(f, x):
    results.append(f.remote(x))
def run_threads(f, args):
    threads = [threading.Thread(target=call, args=(f, x)) for x in args]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
run_threads(nap, [0.5] * 8)  # at once: eight lines
print("lines", direct_line._lines.open, results == ["woke"] * 8)
results.clear()
for i in range(20):  # a thread per call, one after another: idle lines are reused
    run_threads(square, [i])
print("reused", direct_line._lines.open, results == [i * i for i in range(20)])
spawned = square.spawn(7)  # a spawn is stored over a line too
print("spawned", spawned.object_id.startswith("fc-"), spawned.get(timeout=30))
# an interrupted call (Ctrl-C) closes its line; the server cancels the input
main = threading.main_thread().ident
threading.Timer(1.0, signal.pthread_kill, (main, signal.SIGINT)).start()
try:
    nap.remote(60)
except KeyboardInterrupt:
    print("interrupted")
stats = nap.stats()
deadline = time.monotonic() + 20
while (stats.running, stats.queued) != (0, 0) and time.monotonic() < deadline:
    time.sleep(0.1)
    stats = nap.stats()
print("cancelled", (stats.running, stats.queued) == (0, 0))
print("again", square.remote(3))
sys.stdout.flush()
# a line that breaks mid-call fails that call; the next call opens a new one
try:
    nap.remote(60)
except shoal.exception.ConnectionError as exc:
    print("broken:", exc)
sys.stdout.flush()
while not os.path.exists(sys.argv[1]):
    time.sleep(0.05)
print("after restart", square.remote(4))
"""


def test_blocking_calls_borrow_lines_that_fail_alone_and_heal(
    deployed: ServerProcess, tmp_path: Path
) -> None:
    restarted = tmp_path / "restarted"
    client = deployed.start_client(LINES, str(restarted))
    assert client.stdout is not None
    lines: list[str] = []
    while not lines or not lines[-1].startswith("again"):
        line = client.stdout.readline()
        assert line, client.communicate(timeout=30)[1]
        lines.append(line.strip())
    assert lines == [
        "lines 8 True",
        "reused 8 True",
        "spawned True 49",
        "interrupted",
        "cancelled True",
        "again 9",
    ]
    stats = "import shoal; print(shoal.Function.from_name('svc', 'nap').stats().running)"
    wait_until(lambda: deployed.client(stats).stdout.strip() == "1", 30, "the nap to run")
    deployed.kill()
    deployed.start()
    restarted.touch()
    out, err = client.communicate(timeout=60)
    assert client.returncode == 0, err
    assert "broken: the connection to the server at tcp://127.0.0.1:" in out
    assert "after restart 16" in out


SURVIVOR = """
import os, sys, time
import shoal
square = shoal.Function.from_name("svc", "square")
spawned = square.spawn(5)
print("before", sum(square.map(range(10))), flush=True)  # the test kills the server now
while not os.path.exists(sys.argv[1]):
    time.sleep(0.05)
# the same handles, after the server restarted: the connection is made again
print("after", sum(square.map(range(10))), square.stats().containers >= 0)
print("spawned before", spawned.get(timeout=60))
print("spawned after", square.spawn(6).get(timeout=60))
"""


def test_a_clients_handles_outlive_a_server_restart(
    deployed: ServerProcess, tmp_path: Path
) -> None:
    restarted = tmp_path / "restarted"
    client = deployed.start_client(SURVIVOR, str(restarted))
    assert client.stdout is not None
    assert client.stdout.readline().strip() == "before 285"
    deployed.kill()
    deployed.start()
    restarted.touch()
    out, err = client.communicate(timeout=120)
    assert client.returncode == 0, err
    assert out.splitlines() == ["after 285 True", "spawned before 25", "spawned after 36"]


WAITER = """
import shoal
slow = shoal.Function.from_name("svc", "slow")
call = slow.spawn(3.0)
print("spawned", flush=True)
print(call.get(timeout=120).split(" in ")[0])
"""


def test_a_get_in_progress_rides_through_a_server_restart(deployed: ServerProcess) -> None:
    client = deployed.start_client(WAITER)
    assert client.stdout is not None
    assert client.stdout.readline().strip() == "spawned"
    stats = "import shoal; print(shoal.Function.from_name('svc', 'slow').stats().running)"
    wait_until(lambda: deployed.client(stats).stdout.strip() == "1", 30, "the spawn to run")
    deployed.kill()  # the client's get() is waiting on the spawn
    time.sleep(1.0)
    deployed.start()
    out, err = client.communicate(timeout=90)
    assert client.returncode == 0, err
    assert out.strip() == "slept 3.0"  # the stored input ran again after the restart


def test_app_lookup_creates_an_empty_deployed_app(server: ServerProcess) -> None:
    looked = server.client(
        "import shoal\n"
        "app = shoal.App.lookup('shoal-test-made', create_if_missing=True)\n"
        "print(app.app_id)\n"
        "print(shoal.App.lookup('shoal-test-made').app_id)\n"
    )
    assert looked.returncode == 0, looked.stderr
    assert looked.stdout.split() == ["shoal-test-made", "shoal-test-made"]
    rows = json.loads(server.cli("app", "list", "--json").stdout)
    assert [(r["name"], r["state"], r["functions"]) for r in rows] == [
        ("shoal-test-made", "deployed", [])
    ]


def test_a_taken_port_is_one_line_and_every_start_says_where_the_token_is(
    server: ServerProcess, tmp_path: Path
) -> None:
    home = tmp_path / "second"
    env = {**os.environ, "SHOAL_HOME": str(home)}
    env.pop("SHOAL_TOKEN", None)
    taken = subprocess.run(
        [
            sys.executable,
            "-m",
            "shoal.cli",
            "server",
            "--port",
            str(server.port),
            "--http-port",
            "0",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert taken.returncode == 1
    errors = [line for line in taken.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and "cannot listen" in errors[0] and "--port" in errors[0]
    assert "Traceback" not in taken.stderr
    second = ServerProcess(tmp_path / "again")
    second.home = home  # the home whose first start failed
    second.start()
    try:
        wait_until(lambda: "access token" in second.log.read_text(), 30, "the token line")
        assert str(home / "token") in second.log.read_text()
    finally:
        second.stop()


def test_web_endpoints_of_a_deployed_class(server: ServerProcess) -> None:
    out = server.deploy("web_class.py")
    assert "WebApp.web" in out and "Mixed.api" in out
    reply = httpx.get(f"{server.http}/web-class/WebApp.web", params={"name": "ann"}, timeout=60)
    assert reply.status_code == 200 and reply.json()["message"] == "hello ann"
    ping = httpx.get(f"{server.http}/web-class/Mixed.api/ping", timeout=60)
    assert ping.json()["pong"] == 100
    found = server.client(
        "import shoal, urllib.request, json\n"
        "url = shoal.Cls.from_name('web-class', 'WebApp')().web.get_web_url()\n"
        "print(json.load(urllib.request.urlopen(url + '?name=cy', timeout=60))['message'])\n"
        "print(shoal.Cls.from_name('web-class', 'Mixed')().add.remote(1))\n"
    )
    assert found.returncode == 0, found.stderr
    assert found.stdout.split("\n")[:2] == ["hello cy", "101"]


def test_experimental_names_on_a_server(server: ServerProcess) -> None:
    server.deploy("flash.py")
    server.deploy("web_class.py")
    seen = server.client(
        "import shoal.experimental as ex, urllib.request\n"
        "apps = sorted((a.name, a.app_id) for a in ex.list_deployed_apps())\n"
        "print(apps)\n"
        "objects = ex.get_app_objects('web-class')\n"
        "print(sorted(objects), objects['Mixed']().add.remote(5))\n"
        "url = objects and __import__('shoal').Cls.from_name('flash', 'Server').get_web_url()\n"
        "print('Directory listing' in urllib.request.urlopen(url, timeout=60).read().decode())\n"
        "ex.stop_app('flash')\n"
        "print([a.name for a in ex.list_deployed_apps()])\n"
    )
    assert seen.returncode == 0, seen.stderr
    lines = seen.stdout.splitlines()
    assert lines[0] == "[('flash', 'flash'), ('web-class', 'web-class')]"
    assert lines[1] == "['Mixed', 'WebApp'] 105"
    assert lines[2] == "True"
    assert lines[3] == "['web-class']"


def test_deploy_prints_every_function_and_stable_urls_within_origin_ports(
    tmp_path: Path,
) -> None:
    first = free_port()
    ports = range(first, first + 20)
    server = ServerProcess(tmp_path, args=("--origin-ports", f"{ports[0]}-{ports[-1]}")).start()
    try:
        out = server.deploy("web_class.py")
        lines = out.splitlines()
        assert lines[0] == "deployed web-class version 1"
        assert "  Mixed (class)" in lines and "  WebApp (class)" in lines
        path = f"{server.http}/web-class/WebApp.web"
        endpoint = next(line for line in lines if line.startswith("    WebApp.web: "))
        assert endpoint.startswith(f"    WebApp.web: {path} (its own origin: http://127.0.0.1:")
        origin_port = int(endpoint.rsplit(":", 1)[1].rstrip(")"))
        assert origin_port in ports
        assert server.cli("app", "stop", "web-class", "-y").returncode == 0
        again = server.deploy("web_class.py")
        assert f"(its own origin: http://127.0.0.1:{origin_port})" in again  # it kept its port
        assert httpx.get(f"http://127.0.0.1:{origin_port}/", timeout=60).status_code == 200
    finally:
        server.stop()


def _scrape(deployed: ServerProcess, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.get(f"{deployed.http}/metrics", headers=headers, timeout=10)


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_count_a_known_workload_exactly_behind_the_token(deployed: ServerProcess) -> None:
    assert _scrape(deployed, None).status_code == 401
    assert _scrape(deployed, "not-the-token").status_code == 401
    before = _samples(_scrape(deployed, deployed.token).text)
    done = deployed.client(
        "import shoal\n"
        "square = shoal.Function.from_name('svc', 'square')\n"
        "refuse = shoal.Function.from_name('svc', 'refuse')\n"
        "assert list(square.map(range(25))) == [x * x for x in range(25)]\n"
        "try:\n"
        "    refuse.remote('no')\n"
        "except Exception as exc:\n"
        "    print('raised', type(exc).__name__)\n"
        "print('started', square.stats().containers_started)\n"
    )
    assert done.returncode == 0, done.stderr
    started = int(done.stdout.split("started ")[1])
    scraped = _scrape(deployed, deployed.token)
    assert scraped.headers["content-type"].startswith("text/plain")
    after = _samples(scraped.text)

    def grew(name: str, **labels: str) -> float:
        key = (name, frozenset({"app": "svc", **labels}.items()))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert grew("shoal_inputs_total", function="square", status="success") == 25
    assert grew("shoal_inputs_total", function="refuse", status="failure") == 1
    assert grew("shoal_input_queue_seconds_count", function="square") == 25
    assert grew("shoal_input_execution_seconds_count", function="square") == 25
    assert grew("shoal_input_execution_seconds_bucket", function="square", le="+Inf") == 25
    total = after[
        ("shoal_container_starts_total", frozenset({"app": "svc", "function": "square"}.items()))
    ]
    assert total == started  # the same count stats() gives
    pending = (
        "shoal_function_pending_inputs",
        frozenset({"app": "svc", "function": "square"}.items()),
    )
    assert after[pending] == 0


def test_metrics_from_containers_batch_sizes_enter_time_and_loop_lag(
    deployed: ServerProcess,
) -> None:
    deployed.deploy("observed.py")
    done = deployed.client(
        "import shoal\n"
        "double = shoal.Function.from_name('observed', 'double')\n"
        "assert list(double.map(range(10))) == [x * 2 for x in range(10)]\n"
        "assert shoal.Cls.from_name('observed', 'Warm')().hello.remote() == 'warm'\n"
    )
    assert done.returncode == 0, done.stderr

    def batched() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        return _samples(_scrape(deployed, deployed.token).text)

    key = frozenset({"app": "observed", "function": "double"}.items())
    # Containers report every 2 s, after inputs ran.
    wait_until(lambda: batched().get(("shoal_batch_size_sum", key), 0) == 10, 15, "a report")
    after = batched()
    assert 3 <= after[("shoal_batch_size_count", key)] <= 10  # at most 4 a batch
    assert (
        after[("shoal_batch_size_bucket", frozenset({*key, ("le", "4.0")}))]
        == after[("shoal_batch_size_count", key)]
    )
    warm = frozenset({"app": "observed", "function": "Warm"}.items())
    assert after[("shoal_container_enter_seconds_count", warm)] >= 1
    assert after[("shoal_container_enter_seconds_sum", warm)] >= 0.3
    lag = ("shoal_event_loop_lag_seconds", frozenset({"component": "container"}.items()))
    assert lag in after and after[lag] < 5
