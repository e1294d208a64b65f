"""Modal-style: work spawned from inside containers, found again by its call id.

``main`` spawns one ``parent`` per job and returns (run it with ``--detach``); each
parent spawns its children from its container and records their call ids in a Dict;
a collector fetches the children's results by id and stores the total.
``wait_for_all`` does the same and waits for the totals (for a run without a server,
where the app ends with the entrypoint).
"""

import json
import time

import shoal as modal

app = modal.App("fan-out-example")
board = modal.Dict.from_name("shoal-test-fan-out", create_if_missing=True)


@app.function()
def child(job: int, part: int) -> int:
    board[f"{job}:{part}:id"] = modal.current_function_call_id()
    return job * 10 + part


@app.function()
def parent(job: int) -> str:
    calls = [child.spawn(job, part) for part in range(3)]
    collect.spawn(job, [call.object_id for call in calls])
    return modal.current_function_call_id()


@app.function()
def collect(job: int, call_ids: list[str]) -> None:
    results = [modal.FunctionCall.from_id(call_id).get(timeout=60) for call_id in call_ids]
    board[f"{job}:total"] = sum(results)
    board[f"{job}:ids"] = call_ids


@app.local_entrypoint()
def main() -> None:
    board.clear()
    parent.spawn_map(range(4))


@app.local_entrypoint()
def wait_for_all() -> None:
    board.clear()
    parent.spawn_map(range(4))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len([k for k in board.keys() if "total" in k]) < 4:
        time.sleep(0.2)
    print(json.dumps(sorted((k, v) for k, v in board.items() if k.endswith(":total"))))
