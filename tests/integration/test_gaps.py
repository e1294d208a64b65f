"""Smaller parts of Modal's API that real scripts use: gather, batched methods,
module paths, web URL and proxy-auth spellings, and quiet early exits."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import shoal
from apps import basic, lifecycle
from conftest import run_in_terminal
from shoal.client.web import web_spec


def test_gather_returns_results_in_order_and_raises_after_all_finish() -> None:
    with basic.app.run():
        calls = [basic.echo.spawn(i) for i in range(5)]
        assert shoal.FunctionCall.gather(*calls) == [0, 1, 2, 3, 4]
        failing = [basic.echo.spawn("a"), basic.fail.spawn("boom"), basic.echo.spawn("b")]
        with pytest.raises(basic.CustomError, match="boom"):
            shoal.FunctionCall.gather(*failing)
        assert all(call.get(timeout=30) in ("a", "b") for call in (failing[0], failing[2]))

        async def main() -> list[object]:
            return await shoal.FunctionCall.gather.aio(*[basic.echo.spawn(i) for i in range(3)])

        assert asyncio.run(main()) == [0, 1, 2]


def test_a_batched_method_needs_no_method_decorator() -> None:
    with lifecycle.app.run():
        assert list(lifecycle.Batcher().double.map(range(10))) == [2 * i for i in range(10)]


def test_modal_spellings_import_and_mean_the_same() -> None:
    from shoal.functions import FunctionCall

    assert FunctionCall is shoal.FunctionCall

    @shoal.fastapi_endpoint(requires_proxy_auth=True)
    def guarded() -> None: ...

    spec = web_spec(guarded)
    assert spec is not None and spec["requires_auth"] is True
    assert basic.echo.get_web_url() is None  # not a web endpoint being served


SLOW_IMPORT = """
import time
import shoal

time.sleep(1.0)  # the fork server is still importing this when the run ends

app = shoal.App("slow-import")


@app.function()
def f() -> int:
    return 1


if __name__ == "__main__":
    with app.run():
        pass
"""


def test_a_run_that_ends_before_the_fork_server_is_ready_prints_nothing(tmp_path: Path) -> None:
    script = tmp_path / "slow_import.py"
    script.write_text(textwrap.dedent(SLOW_IMPORT))
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr


ENABLED = """
import sys
sys.path.insert(0, {tests!r})
import shoal
from apps import basic

with shoal.enable_output({show}):
    with basic.app.run():
        print("echo:", basic.echo.remote(7))
"""


@pytest.mark.parametrize("show", [True, False])
def test_enable_output_shows_the_status_of_app_run_on_a_terminal(
    tmp_path: Path, show: bool
) -> None:
    script = tmp_path / "enabled.py"
    tests = str(Path(__file__).resolve().parents[1])
    script.write_text(textwrap.dedent(ENABLED.format(tests=tests, show=show)))
    code, screen = run_in_terminal([sys.executable, str(script)])
    assert code == 0 and "echo: 7" in screen, screen
    assert ("containers" in screen) is show


def test_web_endpoint_is_fastapi_endpoints_older_name() -> None:
    with pytest.warns(FutureWarning, match="renamed to @shoal.fastapi_endpoint"):
        decorate = shoal.web_endpoint(method="POST")

    def handler() -> dict:
        return {}

    assert web_spec(decorate(handler)) == web_spec(shoal.fastapi_endpoint(method="POST")(handler))
