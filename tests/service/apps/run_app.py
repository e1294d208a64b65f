"""An app run with ``shoal run`` against a server: an ephemeral app there."""

import json
import os
import time
import urllib.request

import shoal

app = shoal.App("runner")


@app.function()
@shoal.concurrent(max_inputs=20)
def double(x: int) -> int:
    return 2 * x


@app.function()
def slow(seconds: float, path: str) -> str:
    time.sleep(seconds)
    # Marked in a Dict of the server's, not a file: a server's containers are jailed and
    # see none of the test's files.
    shoal.Dict.from_name("runner-marks", create_if_missing=True)[path] = "done"
    return "slept"


@app.cls()
class Counter:
    start: int = shoal.parameter(default=0)

    @shoal.method()
    def add(self, n: int) -> int:
        return self.start + n


@app.function()
@shoal.fastapi_endpoint()
def hello() -> dict:
    return {"pid": os.getpid()}


@app.local_entrypoint()
def main(mode: str = "plain", path: str = "", seconds: float = 3.0) -> None:
    print("sum", sum(double.map(range(10))))
    print("counter", Counter(start=5).add.remote(1))
    print("variant", double.with_options(max_containers=1).remote(4))
    with urllib.request.urlopen(hello.get_web_url(), timeout=30) as reply:
        print("web elsewhere", json.load(reply)["pid"] != os.getpid())
    print("web url", hello.get_web_url())
    if mode == "spawn":
        call = slow.spawn(seconds, path)
        print("spawned", call.object_id)
