"""Dict and Queue: shared by callers and containers, persisted by the store that owns them."""

from __future__ import annotations

import asyncio
import json
import os
import queue as stdlib_queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import shoal
from portability.runner import run_json, shoal_run
from service.harness import ServerProcess
from shoal.exception import InvalidError, NotFoundError, RequestSizeError, SerializationError

SCRIPT = Path(__file__).parent / "scripts" / "dict_queue.py"
EXAMPLE = Path(__file__).parents[2] / "examples" / "dict_and_queue.py"


def check(out: dict, runs: int) -> None:
    assert out["done"] == 10  # two containers shared one queue and took every job once
    assert out["squares"] == [n * n for n in range(10)]
    assert out["left"] == 0
    assert out["runs"] == runs  # the named Dict kept its value from the runs before
    assert out["skip"] is False and out["contains"] is True and out["pop"] == 0
    assert out["empty"] is True and out["nonblocking"] is None
    assert out["ephemeral_len"] == 2 and out["side"] == "from a container"
    assert out["ephemeral_items"] == [["x", 1], ["y", 2]]


def test_embedded_runs_keep_named_objects_in_their_home(tmp_path: Path) -> None:
    env = {**os.environ, "SHOAL_HOME": str(tmp_path / "home")}
    env.pop("SHOAL_SERVER_URL", None)
    check(run_json(SCRIPT, env), runs=0)
    check(run_json(SCRIPT, env), runs=1)


def test_a_server_keeps_named_objects_through_a_crash(server: ServerProcess) -> None:
    check(run_json(SCRIPT, server.env), runs=0)
    server.kill()  # SIGKILL: acknowledged writes were committed before they were answered
    server.start()
    check(run_json(SCRIPT, server.env), runs=1)
    listed = server.client(
        "import shoal\n"
        "d = shoal.Dict.from_name('shoal-test-runs')\n"
        "print(d.get('count'), sorted(d.keys()))\n"
        "shoal.Dict.delete('shoal-test-runs')\n"
        "try:\n"
        "    d2 = shoal.Dict.from_name('shoal-test-runs'); d2.get('count')\n"
        "except shoal.exception.NotFoundError as exc:\n"
        "    print('gone:', exc)\n"
    )
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[0] == "2 ['count']"
    assert "gone: no Dict 'shoal-test-runs'" in listed.stdout


def test_ephemeral_objects_go_with_their_client(server: ServerProcess) -> None:
    made = server.client(
        "import shoal\n"
        "ctx = shoal.Dict.ephemeral({'a': 1})\n"
        "d = ctx.__enter__()\n"
        "print(d.name, d['a'])\n"  # the process exits without leaving the block
    )
    assert made.returncode == 0, made.stderr
    name, value = made.stdout.split()
    assert name.startswith("di-") and value == "1"
    probe = server.client(
        "import shoal\n"
        f"try:\n    shoal.Dict.from_name({name!r}).len()\n"
        "except shoal.exception.NotFoundError:\n    print('dropped')\n"
    )
    assert probe.stdout.strip() == "dropped", probe.stderr


def test_bad_names_values_and_partitions_are_clear_errors(tmp_path: Path) -> None:
    with shoal.Dict.ephemeral() as d, shoal.Queue.ephemeral() as q:
        with pytest.raises(SerializationError, match="cannot pickle"):
            d["lock"] = __import__("threading").Lock()
        with pytest.raises(KeyError):
            d["missing"]
        with pytest.raises(KeyError):
            d.pop("missing")
        assert d.pop("missing", "default") == "default"
        with pytest.raises(InvalidError, match="partition"):
            q.put(1, partition="p" * 65)
        big = b"x" * 2048
        os.environ["SHOAL_MAX_PAYLOAD_BYTES"] = "1024"
        try:
            with pytest.raises(RequestSizeError, match="limit is 1024"):
                d["big"] = big
        finally:
            del os.environ["SHOAL_MAX_PAYLOAD_BYTES"]
        assert d.len() == 0  # nothing half-stored
        with pytest.raises(NotFoundError, match="create_if_missing"):
            shoal.Queue.from_name("shoal-test-never-made").len()
        with pytest.raises(InvalidError, match="Dict name"):
            shoal.Dict.from_name("no spaces allowed", create_if_missing=True).len()


def test_a_full_partition_waits_for_room_and_partitions_expire() -> None:
    with shoal.Queue.ephemeral() as q:
        q.put_many(list(range(5000)), partition="a")  # Modal's limit per partition
        with pytest.raises(stdlib_queue.Full):
            q.put(1, block=False, partition="a")
        with pytest.raises(stdlib_queue.Full):
            q.put(1, timeout=0.2, partition="a")
        reader = threading.Timer(0.3, lambda: q.get(partition="a"))
        reader.start()
        q.put("last", timeout=60, partition="a")  # waits until the reader made room
        reader.join()
        assert q.len(partition="a") == 5000
        with pytest.raises(stdlib_queue.Full):
            q.put_many(list(range(5001)), partition="b")  # all or none
        assert q.len(partition="b") == 0
        q.put("brief", partition="c", partition_ttl=1)
        assert q.len(partition="c") == 1
        time.sleep(1.5)
        assert q.len(partition="c") == 0  # cleared a second after its last put
        with pytest.raises(InvalidError, match="partition_ttl"):
            q.put(1, partition_ttl=0)


def test_every_operation_has_an_aio_form() -> None:
    async def use() -> list[object]:
        async with shoal.Queue.ephemeral() as q, shoal.Dict.ephemeral() as d:
            await q.put_many.aio([1, 2, 3], partition="a")
            got = await q.get_many.aio(2, partition="a")
            seen = [v async for v in q.iterate.aio(partition="a")]
            await d.put.aio("k", "v")
            pairs = [p async for p in d.items.aio()]
            return [got, seen, await q.len.aio(total=True), pairs, await d.contains.aio("k")]

    assert asyncio.run(use()) == [[1, 2], [3], 1, [("k", "v")], True]


def test_the_example_runs(tmp_path: Path) -> None:
    env = {**os.environ, "SHOAL_HOME": str(tmp_path / "home")}
    env.pop("SHOAL_SERVER_URL", None)
    for run in (1, 2):
        done = shoal_run(str(EXAMPLE), env=env)
        assert done.returncode == 0, done.stderr
        assert "handled: 20" in done.stdout
        assert f"runs so far: {run}" in done.stdout


def test_spawns_from_containers_are_stored_and_found_by_id(server: ServerProcess) -> None:
    script = Path(__file__).parent / "scripts" / "fan_out.py"
    started = server.cli("run", "-q", "--detach", f"{script}::main")
    assert started.returncode == 0, started.stderr
    watch = server.client(
        "import time, shoal\n"
        "board = shoal.Dict.from_name('shoal-test-fan-out')\n"
        "deadline = time.monotonic() + 90\n"
        "def totals():\n"
        "    return [k for k in board.keys() if k.endswith(':total')]\n"
        "while time.monotonic() < deadline and len(totals()) < 4:\n"
        "    time.sleep(0.2)\n"
        "print(sorted((k, v) for k, v in board.items() if k.endswith(':total')))\n"
        "ids = board.get('2:ids')\n"
        "print(ids == [board.get(f'2:{p}:id') for p in range(3)], ids[0][:3])\n"
        "print(shoal.FunctionCall.from_id(ids[1]).get(timeout=5))\n"
    )
    assert watch.returncode == 0, watch.stderr
    lines = watch.stdout.splitlines()
    assert lines[0] == str([(f"{job}:total", 30 * job + 3) for job in range(4)])
    assert lines[1] == "True fc-"  # the child saw the id its parent got: a stored call
    assert lines[2] == "21"  # and any process can fetch its result by that id


def test_spawns_from_containers_are_found_by_id_without_a_server(tmp_path: Path) -> None:
    env = {**os.environ, "SHOAL_HOME": str(tmp_path / "home")}
    env.pop("SHOAL_SERVER_URL", None)
    script = Path(__file__).parent / "scripts" / "fan_out.py"
    totals = run_json(f"{script}::wait_for_all", env)
    assert totals == [[f"{job}:total", 30 * job + 3] for job in range(4)]


def test_the_dict_and_queue_commands(tmp_path: Path) -> None:
    env = {**os.environ, "SHOAL_HOME": str(tmp_path / "home")}
    env.pop("SHOAL_SERVER_URL", None)
    fill = (
        "import shoal\n"
        "d = shoal.Dict.from_name('scores', create_if_missing=True)\n"
        "d['alice'] = 3\n"
        "q = shoal.Queue.from_name('jobs', create_if_missing=True)\n"
        "q.put_many([1, 'two']); q.put('p', partition='hi')\n"
    )
    subprocess.run([sys.executable, "-c", fill], env=env, check=True, timeout=120)

    def shoal_cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "shoal.cli", *args]
        return subprocess.run(
            command,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )

    assert "scores" in shoal_cli("dict", "list").stdout
    assert shoal_cli("dict", "items", "scores").stdout == "'alice': 3\n"
    assert shoal_cli("dict", "get", "scores", "alice").stdout == "3\n"
    missing = shoal_cli("dict", "get", "scores", "bob")
    assert missing.returncode == 1 and "no key 'bob'" in missing.stderr
    assert shoal_cli("queue", "len", "jobs", "--total").stdout == "3\n"
    one = shoal_cli("queue", "len", "jobs")
    assert one.stdout == "2\n"  # the unnamed partition, and it says so
    assert "3 in all partitions" in one.stderr
    listed = shoal_cli("queue", "list", "--json")
    assert [(r["name"], r["partitions"], r["items"]) for r in json.loads(listed.stdout)] == [
        ("jobs", 2, 3)
    ]
    assert shoal_cli("queue", "peek", "jobs", "2").stdout == "1\n'two'\n"  # not taken
    assert shoal_cli("queue", "peek", "jobs", "5", "--partition", "hi").stdout == "'p'\n"
    assert shoal_cli("queue", "clear", "jobs").returncode == 0
    assert shoal_cli("queue", "len", "jobs", "--total").stdout == "1\n"  # 'hi' kept its item
    refused = shoal_cli("dict", "delete", "scores")
    assert refused.returncode == 1 and "pass --yes" in refused.stderr
    assert "scores" in shoal_cli("dict", "list").stdout
    assert shoal_cli("dict", "delete", "scores", "-y").returncode == 0
    assert "scores" not in shoal_cli("dict", "list").stdout
    assert shoal_cli("queue", "delete", "--yes", "jobs").returncode == 0


OWNER = """
import os, sys, time
import shoal
d = shoal.Dict.from_name("shared", create_if_missing=True)
q = shoal.Queue.from_name("jobs", create_if_missing=True)
d["a"] = 1
assert q.len() == 0  # made now (from_name is lazy)
print("ready", flush=True)
deadline = time.monotonic() + 60
while "b" not in d and time.monotonic() < deadline:
    time.sleep(0.05)
print("got", d.get("b"), q.get(timeout=30), flush=True)
"""

GUEST = """
import os, sys, time
import shoal
d = shoal.Dict.from_name("shared")
q = shoal.Queue.from_name("jobs")
print("a", d["a"], flush=True)
q.put("job-1")
d["b"] = 2
scratch = shoal.Dict.ephemeral().__enter__()
scratch["x"] = 1  # lives in the owner, goes with this guest
sys.stdin.readline()  # the test says the owner has exited
d["c"] = 3  # the home is free: this process takes it over
owner = open(os.path.join(os.environ["SHOAL_HOME"], "lock")).read().strip()
print("c", d["c"], owner == str(os.getpid()), flush=True)
sys.stdin.readline()
"""


def test_processes_share_a_home_s_named_objects_with_no_server(tmp_path: Path) -> None:
    env = {**os.environ, "SHOAL_HOME": str(tmp_path / "home")}
    env.pop("SHOAL_SERVER_URL", None)

    def start(code: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-c", code],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def shoal_cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "shoal.cli", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )

    owner = start(OWNER)
    guest = None
    try:
        assert owner.stdout is not None
        assert owner.stdout.readline() == "ready\n"
        listed = shoal_cli("dict", "list")  # a second terminal sees the owner's objects
        assert listed.returncode == 0, listed.stderr
        assert "shared" in listed.stdout
        assert shoal_cli("queue", "list").returncode == 0
        guest = start(GUEST)
        assert guest.stdout is not None and guest.stdin is not None
        assert guest.stdout.readline() == "a 1\n"
        out, err = owner.communicate(timeout=60)
        assert owner.returncode == 0, err
        assert out == "got 2 job-1\n"  # the guest's put and set reached the owner's objects
        guest.stdin.write("\n")
        guest.stdin.flush()
        assert guest.stdout.readline() == "c 3 True\n"
        fresh = shoal_cli("dict", "items", "shared")  # now a guest of the new owner
        assert fresh.returncode == 0, fresh.stderr
        assert fresh.stdout.splitlines() == ["'a': 1", "'b': 2", "'c': 3"]
        guest.communicate("\n", timeout=60)
        assert guest.returncode == 0
    finally:
        for process in (owner, guest):
            if process is not None:
                if process.poll() is None:
                    process.kill()
                process.communicate()  # closes its pipes
