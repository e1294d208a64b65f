"""Call graphs of spawned calls, read by id from another request (Modal's job-queue
pattern): the spawning request is the root, the job its child."""

from __future__ import annotations

import os
from pathlib import Path

from portability.runner import run_json
from service.harness import ServerProcess

SCRIPT = Path(__file__).parent / "scripts" / "job_queue.py"


def _check(answer: list) -> None:
    prefix, first, last, root, result = answer
    assert (prefix, first, last) == ("fc-", "PENDING", "SUCCESS")
    assert root == "front"  # the web request that spawned the job
    assert result == {"result": "HELLO!"}


def test_a_web_front_polls_jobs_by_call_graph_embedded(tmp_path: Path) -> None:
    env = {**os.environ, "SHOAL_HOME": str(tmp_path / "home")}
    env.pop("SHOAL_SERVER_URL", None)
    _check(run_json(SCRIPT, env))


def test_a_web_front_polls_jobs_by_call_graph_on_a_server(server: ServerProcess) -> None:
    _check(run_json(SCRIPT, server.env))
