"""Modal-style: blocking Shoal calls at the top of the module, which every container runs
as it imports the app (with sync and async functions alike). Prints one JSON line."""

import json
import uuid

import shoal as modal

app = modal.App("module-level")

scores = modal.Dict.from_name("shoal-test-module-level", create_if_missing=True)
if not modal.is_local():  # in each container, as it imports this module
    scores[f"imported-{uuid.uuid4().hex}"] = 1  # not the pid: each jail numbers its own
    scores["alice"] = 3


@app.function()
def read_sync(key: str) -> int:
    return scores[key]


@app.function()
async def read_async(key: str) -> int:
    return await scores.get.aio(key)


@app.local_entrypoint()
def main() -> None:
    found = [read_sync.remote("alice"), read_async.remote("alice")]
    imports = sum(1 for key in scores.keys() if key.startswith("imported-"))
    print(json.dumps({"found": found, "imports": imports}))
