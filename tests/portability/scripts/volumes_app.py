"""Modal-style: a volume written by one function's containers and read by another's.

Prints one JSON line the test reads.
"""

import json
import os

import shoal as modal

app = modal.App("volumes-example")
vol = modal.Volume.from_name("shoal-test-volume", create_if_missing=True)
MOUNT = "/shoal-test-volume-data"  # does not exist on the host: only in the containers


@app.function(volumes={MOUNT: vol})
def write(n: int) -> str:
    os.makedirs(f"{MOUNT}/runs", exist_ok=True)
    with open(f"{MOUNT}/runs/{n}.txt", "w") as out:
        out.write(f"run {n}")
    vol.commit()
    return os.getcwd()


@app.function(volumes={"/root/.cache/shoal-test/models": vol})
def read() -> list[str]:
    vol.reload()
    folder = "/root/.cache/shoal-test/models/runs"
    return sorted(open(os.path.join(folder, name)).read() for name in os.listdir(folder))


@app.local_entrypoint()
def main() -> None:
    cwd = write.remote(1)
    write.remote(2)
    out = {
        "read": read.remote(),
        "cwd": cwd,
        "listed": sorted(e.path for e in vol.listdir("/runs")),
        "content": b"".join(vol.read_file("runs/2.txt")).decode(),
        "on_host": [os.path.exists(MOUNT), os.path.exists("/root/.cache/shoal-test")],
    }
    vol.remove_file("runs", recursive=True)
    out["after_rm"] = [e.path for e in vol.listdir("/")]
    print(json.dumps(out))
