"""``shoal run`` as a user types it: a real subprocess, real containers."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from urllib.request import Request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import run_in_terminal

APP = Path(__file__).parents[1] / "apps" / "cli_app.py"
SHOAL = (sys.executable, "-m", "shoal.cli")
EXAMPLES = Path(__file__).parents[2] / "examples"


def shoal(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shoal.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_run_an_entrypoint_with_options() -> None:
    result = shoal("run", f"{APP}::main", "--count", "5", "--word", "ok")
    assert result.returncode == 0, result.stderr
    assert "squares: [0, 1, 4, 9, 16] ok" in result.stdout
    assert "containers" not in result.stderr  # no status display off a terminal


def test_run_one_function_by_name() -> None:
    result = shoal("run", "-q", f"{APP}::square", "--x", "7")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "49"


def test_a_failing_entrypoint_exits_non_zero_with_the_traceback() -> None:
    result = shoal("run", "-q", f"{APP}::crash")
    assert result.returncode == 1
    assert "TypeError" in result.stderr
    assert "Remote traceback" in result.stderr


def test_a_failing_map_shows_the_users_frames_and_names_the_input() -> None:
    result = shoal("run", "-q", f"{APP}::map_crash")
    assert result.returncode == 1
    assert "TypeError" in result.stderr
    assert "input 2 of the map" in result.stderr
    frames = [line for line in result.stderr.splitlines() if line.startswith('  File "')]
    assert frames and all("cli_app.py" in line for line in frames), result.stderr
    assert "shoal/client" not in result.stderr and "concurrent" not in result.stderr


def test_an_app_that_cannot_start_is_one_line() -> None:
    result = shoal("run", "-q", str(APP.parent / "no_secret.py"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "Error: no secret 'shoal-test-never-created'; create it with "
        "`shoal secret create shoal-test-never-created KEY=VALUE`"
    ]


def test_ambiguous_or_unknown_targets_are_usage_errors() -> None:
    result = shoal("run", str(APP))
    assert result.returncode == 2
    assert "name one" in result.stderr
    assert shoal("run", f"{APP}::nope").returncode == 2
    assert shoal("run", "missing.py").returncode == 2


def test_a_missing_required_option_is_a_usage_error_naming_it() -> None:
    result = shoal("run", "-q", f"{APP}::power", "--exp", "3")
    assert result.returncode == 2
    assert "Missing option '--base'" in result.stderr
    assert "TypeError" not in result.stderr  # the function never ran with base=None


def test_help_after_a_target_lists_its_own_options() -> None:
    result = shoal("run", f"{APP}::power", "--help")
    assert result.returncode == 0, result.stderr
    assert "Raise BASE to EXP." in result.stdout
    assert "--base INTEGER" in result.stdout and "[required]" in result.stdout
    assert "--exp INTEGER" in result.stdout and "[default: 2]" in result.stdout
    assert result.stdout.startswith(f"Usage: shoal run {APP}::power")


def test_a_method_target_and_bool_flags() -> None:
    result = shoal("run", "-q", f"{APP}::Adder.add", "--x", "5", "--twice")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "20"
    unknown = shoal("run", "-q", f"{APP}::Adder.nope")
    assert unknown.returncode == 2 and "no method 'nope'" in unknown.stderr


def test_a_module_target_with_dash_m() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "shoal.cli",
            "run",
            "-q",
            "-m",
            "apps.cli_app::power",
            "--base",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=APP.parents[1],
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "9"
    missing = shoal("run", "-m", "no_such_module_here")
    assert missing.returncode == 2 and "no module named" in missing.stderr


def test_serving_a_missing_file_is_an_error_at_once() -> None:
    for reload in ("--reload", "--no-reload"):
        result = subprocess.run(
            [sys.executable, "-m", "shoal.cli", "serve", "nofile.py", reload],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        assert result.returncode == 2
        assert result.stderr.startswith("Usage: shoal serve"), result.stderr
        assert "no such Python file" in result.stderr


def test_serving_an_app_that_fails_with_no_terminal_exits(tmp_path: Path) -> None:
    broken = tmp_path / "noweb.py"
    broken.write_text("import shoal\n")
    result = subprocess.run(
        [sys.executable, "-m", "shoal.cli", "serve", str(broken)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2
    assert "must define exactly one shoal.App" in result.stderr


def test_the_quickstart_example_does_what_its_comments_say() -> None:
    result = shoal("run", "-q", str(EXAMPLES / "quickstart.py"), "--n", "100")
    assert result.returncode == 0, result.stderr
    assert "10 inputs on 10 threads" in result.stdout
    assert "10 inputs on 1 thread" in result.stdout
    assert "100 inputs on 5 containers" in result.stdout


def test_run_serves_web_endpoints_while_the_entrypoint_runs() -> None:
    result = shoal("run", "-q", str(APP.parent / "web_entry.py"))
    assert result.returncode == 0, result.stderr
    assert "{'hello': 'run'}" in result.stdout
    assert "web endpoints on http://127.0.0.1:" in result.stderr


def test_an_async_entrypoint_is_awaited() -> None:
    result = shoal("run", f"{APP}::awaited", "--x", "9")
    assert result.returncode == 0, result.stderr
    assert "awaited: 81" in result.stdout
    assert "never awaited" not in result.stderr


def test_on_a_terminal_the_status_is_drawn_and_cleared_before_a_traceback() -> None:
    code, screen = run_in_terminal([sys.executable, "-m", "shoal.cli", "run", f"{APP}::crash"])
    assert code == 1
    assert "containers" in screen  # the live status was drawn
    lines = screen.replace("\r", "\n").splitlines()
    assert any(line.startswith("Traceback") for line in lines), screen[-2000:]


def test_detach_with_no_server_waits_for_the_spawned_work() -> None:
    result = shoal("run", "-q", "--detach", str(APP.parent / "detached.py"), "--n", "4")
    assert result.returncode == 0, result.stderr
    assert "spawned" in result.stdout
    assert "gathered 14" in result.stdout  # printed by the spawned input, after main returned
    assert "waiting for 1 input to finish; Ctrl-C stops them" in result.stderr
    assert "Traceback" not in result.stderr


#: Options of detached.py whose spawned input outlasts the test unless stopped.
HOLD = ("--n", "2", "--hold", "60")


def test_ctrl_c_stops_a_detached_wait() -> None:
    proc = subprocess.Popen(
        [*SHOAL, "run", "-q", "--detach", str(APP.parent / "detached.py"), *HOLD],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if "waiting for" in line:
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "gathered" not in out


def _get(url: str, token: str = "") -> tuple[int, bytes]:
    """GET ``url`` (with the bearer ``token``): its status and body."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(Request(url, headers=headers), timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


def test_run_with_dashboard_serves_it_behind_a_token_while_it_runs(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    proc = subprocess.Popen(
        [*SHOAL, "run", "-q", "--dashboard", f"{APP}::hold", "--gate", str(gate)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None and proc.stdout is not None
        said = proc.stderr.readline()
        printed = r"dashboard on (http://127\.0\.0\.1:\d+/_shoal/) \(token: (\S+)\)\n"
        found = re.fullmatch(printed, said)
        assert found, said
        url, token = found.groups()
        assert proc.stdout.readline() == "squares: [0, 1, 4, 9, 16]\n"
        assert _get(url + "api/apps")[0] == 401
        status, body = _get(url + "api/apps", token)
        assert status == 200
        assert any(a["name"] == "cli" and "square" in a["functions"] for a in json.loads(body))
        status, body = _get(url + "metrics", token)
        done = {
            sample.labels["status"]: sample.value
            for family in text_string_to_metric_families(body.decode())
            for sample in family.samples
            if sample.name == "shoal_inputs_total" and sample.labels["function"] == "square"
        }
        assert done["success"] == 5 and done["failure"] == 0
    finally:
        gate.touch()
        proc.wait(timeout=60)
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == 0
    with pytest.raises(urllib.error.URLError):  # it went with the run
        _get(url + "api/apps", token)
