"""Each failure an adversarial pass found, pinned: no hang, no lost neighbour, nothing left.

Every test here failed before its fix (see the issue's list, numbered the same way).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from benchmarks import faults

from apps import faulty
from conftest import control_address, wait_until
from shoal import settings
from shoal.control import run_dir
from shoal.exception import ContainerCrashError, RemoteError, RequestSizeError


@pytest.fixture(params=["forked", "fresh"])
def backend_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test with containers forked from the fork server, and as fresh interpreters."""
    monkeypatch.setenv("SHOAL_FORK_SERVER", "1" if request.param == "forked" else "0")
    return str(request.param)


# -- 1. BaseException from user code or payloads -------------------------------------


def test_sys_exit_in_a_map_fails_that_input_and_the_loop_survives() -> None:
    with faulty.app.run():
        results = list(faulty.exits.map([-1, 3, -2], return_exceptions=True))
        assert results[0] == -1 and results[2] == -2
        assert isinstance(results[1], RemoteError)
        assert "exits (call" in str(results[1]) and "SystemExit(3)" in str(results[1])
        with pytest.raises(RemoteError, match="SystemExit"):
            list(faulty.exits.map([7]))
        assert faulty.exits.remote(-5) == -5  # the next call works


def test_sys_exit_through_spawn_get_is_an_error_naming_the_call() -> None:
    with faulty.app.run():
        call = faulty.exits.spawn(0)
        with pytest.raises(RemoteError, match=f"exits \\({call.object_id}\\)"):
            call.get(timeout=60)
        assert faulty.exits.spawn(-1).get(timeout=60) == -1


def test_keyboard_interrupt_in_an_async_function_fails_only_its_input() -> None:
    with faulty.app.run():
        results = list(faulty.interrupts.map(range(4), return_exceptions=True))
        assert [r for i, r in enumerate(results) if i != 1] == [0, 2, 3]
        assert isinstance(results[1], RemoteError) and "KeyboardInterrupt" in str(results[1])


def test_payloads_that_unpickle_into_system_exit_are_errors_at_the_caller() -> None:
    with faulty.app.run():
        outcomes = list(faulty.returns_exit_on_unpickle.starmap([()], return_exceptions=True))
        assert "cannot unpickle" in str(outcomes[0])
        with pytest.raises(RemoteError, match="cannot be rebuilt here"):
            faulty.raises_exit_on_unpickle.spawn().get(timeout=60)
        with pytest.raises(RemoteError):
            list(faulty.raises_exit_on_unpickle.starmap([()]))
        assert faulty.exits.remote(-1) == -1


# -- 2. a poison input and its neighbours ---------------------------------------------


def test_a_poison_input_fails_alone_and_its_neighbours_succeed() -> None:
    with faulty.app.run():
        results = list(faulty.poison.map(range(8), [5] * 8, return_exceptions=True))
        assert [r for i, r in enumerate(results) if i != 5] == [i * 10 for i in range(8) if i != 5]
        assert isinstance(results[5], ContainerCrashError)
        assert "running it alone" in str(results[5])
        assert faulty.poison.remote(1, 5) == 10  # the function still works


# -- 3. results and exceptions over the payload limit ----------------------------------


def test_an_oversized_result_is_one_clear_error_without_reruns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SHOAL_MAX_PAYLOAD_BYTES", str(1 << 20))
    with faulty.app.run():
        with pytest.raises(RequestSizeError, match=r"return value .* over the limit"):
            faulty.big_result.remote(2 << 20)
        with pytest.raises(RemoteError, match="over the limit") as info:
            faulty.big_exception.remote(2 << 20)
        assert "ValueError: xxxx" in str(info.value)
        assert faulty.big_result.stats().containers_started == 1
        assert faulty.big_exception.stats().containers_started == 1


# -- 6. processes started by user code -----------------------------------------------


def test_processes_started_by_user_code_end_with_the_app(backend_mode: str) -> None:
    marker = f"{600 + uuid.uuid4().int % 1000}.{uuid.uuid4().int % 1000:03d}"
    with faulty.app.run():
        faulty.starts_child.remote(marker, False)
        assert faults.with_cmdline(f"sleep {marker}")
    wait_until(lambda: not faults.with_cmdline(f"sleep {marker}"), timeout=10, what="user's child")


def test_processes_of_a_killed_container_end_with_it(backend_mode: str) -> None:
    marker = f"{600 + uuid.uuid4().int % 1000}.{uuid.uuid4().int % 1000:03d}"
    with faulty.app.run():
        with pytest.raises(ContainerCrashError):
            faulty.starts_child.remote(marker, True)  # every try SIGKILLs its own container
        wait_until(lambda: not faults.with_cmdline(f"sleep {marker}"), timeout=10, what="orphans")


def test_socket_directories_of_dead_owners_are_swept(tmp_path: Path) -> None:
    dead = tmp_path / f"{run_dir.PREFIX}dead"
    dead.mkdir()
    (dead / run_dir.OWNER).write_text("999999999 12345\n")  # no such process
    reused = tmp_path / f"{run_dir.PREFIX}reused"
    reused.mkdir()
    (reused / run_dir.OWNER).write_text(f"{os.getpid()} 1\n")  # our pid, another start time
    alive = Path(run_dir.create())
    try:
        mine = tmp_path / f"{run_dir.PREFIX}mine"
        mine.mkdir()
        (mine / run_dir.OWNER).write_text((alive / run_dir.OWNER).read_text())
        removed = run_dir.sweep(str(tmp_path))
        assert sorted(removed) == sorted([str(dead), str(reused)])
        assert mine.exists()
    finally:
        import shutil

        shutil.rmtree(alive)


# -- 7. no bare pid is signalled ------------------------------------------------------


@pytest.fixture
def signal_audit(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Records every signal this process sends by pid; only an unreaped (zombie) target's
    process group may be signalled by number, since its id cannot have been reused."""
    bad: list[str] = []
    real_killpg = os.killpg

    def kill(pid: int, sig: int) -> None:
        bad.append(f"os.kill({pid}, {sig})")

    def killpg(pgid: int, sig: int) -> None:
        if faults.state(pgid) != "Z":
            bad.append(f"os.killpg({pgid}, {sig}) while {pgid} is {faults.state(pgid)}")
        real_killpg(pgid, sig)

    monkeypatch.setattr(os, "kill", kill)
    monkeypatch.setattr(os, "killpg", killpg)
    yield bad


def test_containers_are_never_signalled_by_a_bare_pid(
    backend_mode: str, signal_audit: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOAL_SHUTDOWN_GRACE", "0.2")
    with faulty.app.run():
        results = list(faulty.poison.map(range(8), [2] * 8, return_exceptions=True))
        assert sum(isinstance(r, ContainerCrashError) for r in results) == 1
        assert faulty.whereami.remote()  # one more pool, stopped (and killed) at exit
    assert signal_audit == []


# -- 8. unauthenticated connections to the control socket -----------------------------


def _frame(items: list[Any]) -> bytes:
    body = msgpack.packb(items, use_bin_type=True)
    return struct.pack(">I", len(body)) + body


def _closed_by_peer(conn: socket.socket) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return conn.recv(1, socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True

    return check


def test_silent_and_malformed_peers_are_closed(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SHOAL_HANDSHAKE_TIMEOUT", "0.5")
    caplog.set_level(logging.ERROR)
    with faulty.app.run():
        address = control_address()
        silent = []
        for _ in range(50):
            conn = socket.socket(socket.AF_UNIX)
            conn.connect(address)
            silent.append(conn)
        wrong_type = socket.socket(socket.AF_UNIX)
        wrong_type.connect(address)
        wrong_type.sendall(_frame([0, "faulty-c1", 12345, 1]))  # Hello with an int token
        wrong_token = socket.socket(socket.AF_UNIX)
        wrong_token.connect(address)
        wrong_token.sendall(_frame([0, "faulty-c1", "not the token", 1]))
        garbage = socket.socket(socket.AF_UNIX)
        garbage.connect(address)
        garbage.sendall(b"\xff\xff\xff\xff" + b"x" * 100)
        try:
            for conn in [*silent, wrong_type, wrong_token, garbage]:
                wait_until(_closed_by_peer(conn), timeout=10, what="the peer to be closed")
            assert faulty.exits.remote(-1) == -1
        finally:
            for conn in [*silent, wrong_type, wrong_token, garbage]:
                conn.close()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_each_container_has_a_token_of_its_own() -> None:
    with faulty.app.run():
        address = control_address()
        seen = dict(faulty.credentials.map([1.0, 1.0]))  # two inputs at once: two containers
        assert len(seen) == 2
        first, second = seen.values()
        assert first != second  # neither may pose as the other
        posing = socket.socket(socket.AF_UNIX)
        posing.connect(address)
        try:  # a container's own token under another container's id is refused
            posing.sendall(_frame([0, "faulty.credentials-c3", first, 1]))
            wait_until(_closed_by_peer(posing), timeout=10, what="the peer to be closed")
        finally:
            posing.close()


# -- 10. fan-out on a small machine -----------------------------------------------------


def test_many_spawns_with_default_scaling_stay_within_the_container_budget() -> None:
    with faulty.app.run():
        calls = [faulty.quick.spawn(i) for i in range(3000)]
        assert sum(call.get(timeout=120) for call in calls) == sum(range(3000))
        assert faulty.quick.stats().containers_started <= settings.max_containers()


def test_a_busy_function_takes_room_from_idle_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOAL_MAX_CONTAINERS", "2")
    with faulty.app.run():
        assert faulty.whereami.remote() and faulty.exits.remote(-1) == -1  # two idle containers
        assert list(faulty.quick.map(range(20))) == list(range(20))
        assert faulty.quick.stats().containers_started >= 1


def test_async_entry_points_see_errors_not_hangs() -> None:
    async def main() -> list[Any]:
        return [r async for r in faulty.exits.map.aio([-1, 2], return_exceptions=True)]

    with faulty.app.run():
        results = asyncio.run(main())
    assert results[0] == -1 and isinstance(results[1], RemoteError)
    assert sys.modules["shoal"]  # the interpreter is intact
