"""DESIGN section 3: every failure reaches the caller as a clear error, and nothing is lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from benchmarks import faults

import shoal
from apps import basic, broken_import, missing_function
from conftest import container_pids, wait_until
from shoal.exception import (
    ContainerCrashError,
    ContainerInitError,
    ExecutionError,
    FunctionTimeoutError,
    InputCancellation,
    RequestSizeError,
    SerializationError,
)


def test_exception_keeps_its_type_and_the_remote_traceback() -> None:
    with basic.app.run(), pytest.raises(basic.CustomError, match="nope") as info:
        basic.fail.remote("nope")
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "Remote traceback (fail (call" in notes
    assert "raise CustomError(message)" in notes
    assert f'File "{basic.__file__}"' in notes  # the caller's own file, not a copy of it
    assert "shoal/container" not in notes  # the runtime's own frames are left out


def test_unpicklable_arguments_fail_at_the_caller_before_queueing() -> None:
    with basic.app.run():
        with pytest.raises(SerializationError, match="arguments of echo"):
            basic.echo.remote(threading.Lock())
        stats = basic.echo.stats()
        assert (stats.queued, stats.containers_started) == (0, 0)


def test_unpicklable_result_is_a_clear_error() -> None:
    with basic.app.run(), pytest.raises(SerializationError, match="return value"):
        basic.unpicklable_result.remote()


def test_oversized_payload_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOAL_MAX_PAYLOAD_BYTES", str(1 << 20))
    with basic.app.run():
        with pytest.raises(RequestSizeError, match="SHOAL_MAX_PAYLOAD_BYTES"):
            basic.echo.remote(b"x" * (2 << 20))
        assert basic.echo.remote(b"y" * 1000) == b"y" * 1000
        with pytest.raises(RequestSizeError, match="return value"):  # refused in the container
            basic.big_result.remote(2 << 20)
        assert len(basic.big_result.remote(1000)) == 1000


def test_batched_inputs_and_outputs_are_split_to_fit_the_frame_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Inputs dispatched together travel as one batch (``Many``) and outputs that end
    together as another; near the payload limit they are split to fit the frame limit
    (a frame over it would be refused, and its container lost)."""
    monkeypatch.setenv("SHOAL_MAX_PAYLOAD_BYTES", str(64 << 10))
    items = [bytes([i]) * ((20 if i % 3 else 40) << 10) for i in range(60)]
    with basic.app.run():
        assert list(basic.echo_together.map(items)) == items
        assert basic.echo_together.stats().containers_started == 1  # none was lost


def test_a_module_that_fails_to_import_fails_the_call_with_its_traceback() -> None:
    with broken_import.app.run():
        with pytest.raises(ContainerInitError) as info:
            broken_import.f.remote()
        assert "definitely_missing" in str(info.value)
        assert "broken_import.py" in str(info.value)  # the import traceback
        results = list(broken_import.f.map(range(20), return_exceptions=True))
        assert all(isinstance(r, ContainerInitError) for r in results)
        assert broken_import.f.stats().containers_started <= 2  # no restart storm


def test_a_function_the_container_cannot_find_is_a_clear_error() -> None:
    with missing_function.app.run(), pytest.raises(ContainerInitError, match="not found"):
        missing_function.ghost.remote()


def test_sync_timeout_raises_and_replaces_the_container() -> None:
    with basic.app.run():
        started = time.monotonic()
        with pytest.raises(FunctionTimeoutError, match="timeout of 1 s") as info:
            basic.slow_sync.remote()
        assert isinstance(info.value, TimeoutError)
        assert time.monotonic() - started < 15
        # The thread could not be stopped: that container is retired.
        wait_until(lambda: basic.slow_sync.stats().containers == 0, what="retired container")


def test_async_timeout_cancels_the_task_and_keeps_the_container() -> None:
    with basic.app.run():
        with pytest.raises(FunctionTimeoutError):
            basic.slow_async.remote()
        basic.pid_async.remote()
        assert basic.slow_async.stats().containers == 1
        assert basic.slow_async.stats().containers_started == 1


def test_a_container_killed_mid_input_reruns_it_elsewhere(tmp_path: Path) -> None:
    with basic.app.run():
        survivor = basic.die_once.remote(str(tmp_path / "marker"))
        stats = basic.die_once.stats()
    assert survivor != os.getpid()
    assert stats.containers_started == 2


def test_a_container_that_always_dies_ends_in_container_crash_error() -> None:
    with basic.app.run():
        with pytest.raises(ContainerCrashError, match="always_exit"):
            basic.always_exit.remote()
        assert basic.always_exit.stats().containers_started == 4  # first try + 3 retries


def test_retries_rerun_failed_inputs(tmp_path: Path) -> None:
    with basic.app.run():
        assert basic.flaky.remote(str(tmp_path / "a"), failures=2) == 3
        with pytest.raises(basic.CustomError, match="attempt 3"):
            basic.flaky.remote(str(tmp_path / "b"), failures=5)


def test_spawn_get_timeout_and_cancel(gate: Path) -> None:
    with basic.app.run():
        call = basic.cancellable.spawn(str(gate))
        with pytest.raises(TimeoutError):
            call.get(timeout=0.2)
        call.cancel()
        with pytest.raises(InputCancellation):
            call.get(timeout=10)
        # The cancelled task freed its slot: four more inputs still run at once.
        others = [basic.cancellable.spawn(str(gate)) for _ in range(4)]
        wait_until(lambda: basic.cancellable.stats().running == 4, what="4 running")
        gate.touch()
        assert [c.get(timeout=30) for c in others] == ["finished"] * 4


def test_calls_outside_a_running_app_are_refused() -> None:
    with pytest.raises(ExecutionError, match="not running"):
        basic.echo.remote(1)


def test_containers_exit_with_the_app() -> None:
    with basic.app.run():
        pid = basic.pid.remote()
        assert pid in container_pids()
    wait_until(lambda: pid not in container_pids(), timeout=10, what="container exit")


def test_no_container_outlives_a_killed_caller(tmp_path: Path) -> None:
    script = tmp_path / "caller.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys, time
            from apps import warm
            with warm.app.run():
                while warm.warm.stats().ready < 2:
                    time.sleep(0.05)
                print("ready", flush=True)
                time.sleep(120)
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    caller = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert caller.stdout is not None
        assert caller.stdout.readline().strip() == "ready"
        children = container_pids(caller.pid)
        assert len(children) >= 2
        caller.send_signal(signal.SIGKILL)
        caller.wait(timeout=10)
        wait_until(
            lambda: not any(os.path.exists(f"/proc/{p}") and faults.alive(p) for p in children),
            timeout=15,
            what="orphaned containers to exit",
        )
    finally:
        caller.kill()
        caller.wait()
        if caller.stdout is not None:
            caller.stdout.close()


def test_functions_must_be_locatable_unless_serialized() -> None:
    app = shoal.App("local-defs")

    def inner(x: int) -> int:
        return x + 1

    with pytest.raises(shoal.InvalidError, match="serialized=True"):
        app.function()(inner)
    handle = app.function(serialized=True, name="inner_ok")(inner)
    with app.run():
        assert handle.remote(1) == 2


def test_a_container_that_cannot_stop_an_input_is_killed_by_the_control_plane() -> None:
    with basic.app.run():
        started = time.monotonic()
        with pytest.raises(FunctionTimeoutError, match="did not stop it"):
            basic.blocks_its_loop.remote()
        assert time.monotonic() - started < 20  # timeout 1 s + the 5 s grace, loosely
        wait_until(lambda: basic.blocks_its_loop.stats().containers == 0, what="killed")
