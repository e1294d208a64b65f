"""Container output kept on disk per app, rotated, searchable, and there after a restart."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import wait_until
from service.harness import ServerProcess

TESTS = Path(__file__).parents[1]
SQUARES = "import shoal; print(list(shoal.Function.from_name('svc', 'square').map({})))"


def logs(server: ServerProcess, *args: str, app: str = "svc") -> list[str]:
    done = server.cli("app", "logs", app, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def squared(lines: list[str]) -> set[int]:
    """The numbers the lines say were squared (prints of threads may share a line)."""
    return {int(n) for line in lines for n in re.findall(r"squaring (\d+)", line)}


def test_logs_are_searchable_rotated_and_survive_a_restart(tmp_path: Path) -> None:
    env = {"SHOAL_LOG_BYTES": "8192", "SHOAL_LOG_FILES": "3"}
    server = ServerProcess(tmp_path, env).start()
    try:
        server.deploy()
        done = server.client(SQUARES.format("range(300)"))
        assert done.returncode == 0, done.stderr
        wait_until(lambda: len(squared(logs(server))) == 300, 10, "every line in memory")
        on_disk = squared(logs(server, "--search", "squaring"))  # a filter reads the files
        # Rotated: 3 files of about 8 KiB hold some 200 of the 300 lines, the newest.
        assert 100 < len(on_disk) < 300
        kept = sorted((server.home / "logs").glob("svc.log*"))
        assert len(kept) == 3 and all(p.stat().st_size < 8192 + 200 for p in kept)
        last = logs(server, "--tail", "1", "--search", "squaring")
        assert len(last) == 1 and last[0].startswith("[svc.v1.square-c")
        number = max(squared(last))
        assert squared(logs(server, "--search", f"squaring {number}")) >= {number}
        five = server.cli("app", "logs", "svc", "--tail", "5")  # Shoal's own lines: stderr
        assert len(five.stdout.splitlines()) + len(five.stderr.splitlines()) == 5
        assert logs(server, "--function", "nap") == []
        assert squared(logs(server, "--function", "square", "--search", "squaring")) == on_disk
        stamped = logs(server, "--tail", "1", "--search", "squaring", "--timestamps")[0]
        assert stamped[:4].isdigit() and "T" in stamped.split()[0]  # an ISO time first
        assert logs(server, "--until", "1h", "--search", "squaring") == []  # all newer
        assert squared(logs(server, "--since", "1h", "--search", "squaring")) == on_disk
        server.stop()
        server.start()
        # Read back from disk by the new server: the newest lines (the scheduled tick's
        # own lines may have rotated the oldest out meanwhile).
        restored = squared(logs(server))
        assert restored <= on_disk and number in restored and len(restored) > 50
        assert squared(logs(server, "--search", f"squaring {number}")) >= {number}
    finally:
        server.stop()


TALK = """
import json, shoal
chat = shoal.Function.from_name("talk", "chat")
calls = [chat.spawn(n) for n in range(6)]
assert [c.get() for c in calls] == [c.object_id for c in calls]
print(json.dumps([c.object_id for c in calls]))
"""

CALL_LOGS = """
import json, shoal
call = shoal.FunctionCall.from_id(sys.argv[1])
print(json.dumps([line.text for line in call.get_logs()]))
"""


def test_a_stored_call_s_lines_are_its_own_from_the_cli_and_python(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path).start()
    try:
        server.deploy(str(TESTS / "apps" / "talkative.py"))
        done = server.client(TALK)
        assert done.returncode == 0, done.stderr
        ids = json.loads(done.stdout.splitlines()[-1])
        for n, object_id in enumerate(ids):
            expected = [f"chat {n} one", f"chat {n} two"]
            mine = ("--input", object_id)
            wait_until(lambda m=mine: len(logs(server, *m, app="talk")) == 2, 10, "its lines")
            assert [line.split("] ", 1)[1] for line in logs(server, *mine, app="talk")] == expected
            asked = server.client(CALL_LOGS.replace("sys.argv[1]", repr(object_id)))
            assert asked.returncode == 0, asked.stderr
            assert json.loads(asked.stdout.splitlines()[-1]) == expected
        assert logs(server, "--input", "no-such-call", app="talk") == []
    finally:
        server.stop()


def test_shoal_log_format_json_makes_every_line_of_the_server_s_log_an_object(
    tmp_path: Path,
) -> None:
    server = ServerProcess(tmp_path, {"SHOAL_LOG_FORMAT": "json"}).start()
    try:
        server.deploy(str(TESTS / "apps" / "talkative.py"))
        done = server.client(TALK)
        assert done.returncode == 0, done.stderr
        ids = json.loads(done.stdout.splitlines()[-1])
        wait_until(lambda: f"chat {len(ids) - 1} two" in server.log.read_text(), 10, "lines")
    finally:
        server.stop()
    lines = server.log.read_text().splitlines()
    rows = []
    for line in lines:
        if line == server.token:  # the bare token, printed once
            continue
        try:
            rows.append(json.loads(line))
        except ValueError:
            pytest.fail(f"a line of the log is not JSON: {line!r}")
    assert len(rows) == len(lines) - 1
    assert all({"time", "level", "component", "message"} <= row.keys() for row in rows)
    started = [row for row in rows if row["message"].startswith("shoal server on")]
    assert started[0]["url"] == server.url and started[0]["component"] == "server"
    printed = {row["message"]: row for row in rows if row["component"] == "container"}
    for n, object_id in enumerate(ids):
        for word in ("one", "two"):
            row = printed[f"chat {n} {word}"]
            assert row["input"] == object_id and row["stream"] == "stdout"
            assert row["container"].startswith("talk.v1.chat-c")


def test_an_unknown_log_format_is_refused_at_start(tmp_path: Path) -> None:
    env = {**os.environ, "SHOAL_HOME": str(tmp_path), "SHOAL_LOG_FORMAT": "xml"}
    done = subprocess.run(
        [sys.executable, "-m", "shoal.cli", "server", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "SHOAL_LOG_FORMAT='xml': expected text or json" in done.stderr
