"""A deployed app for the service tests: plain, generator, failing, class, web, scheduled."""

import asyncio
import os
import time

import service_helper

import shoal

app = shoal.App("svc")


@app.function()
@shoal.concurrent(max_inputs=100)
def square(x: int) -> int:
    print("squaring", x)
    return service_helper.times(x, x)


@app.function()
@shoal.concurrent(max_inputs=100)
def slow(seconds: float) -> str:
    time.sleep(seconds)
    return f"slept {seconds} in {os.getpid()}"


@app.function()
@shoal.concurrent(max_inputs=10)
async def nap(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "woke"


@app.function(max_containers=2)
@shoal.concurrent(max_inputs=50)
def work(seconds: float) -> str:
    time.sleep(seconds)
    return f"worked {seconds}"


@app.function()
def count(n: int):
    yield from range(n)


class Refused(Exception):
    """An exception class only the app's own module defines."""


@app.function()
def refuse(reason: str) -> None:
    raise Refused(reason)


@app.cls()
class Greeter:
    name: str = shoal.parameter(default="anon")

    @shoal.method()
    def hello(self, who: str) -> str:
        return f"{self.name} greets {who}"


@app.function()
@shoal.concurrent(max_inputs=50)
@shoal.fastapi_endpoint()
def version() -> dict:
    return {"version": service_helper.VERSION}


# The name of the Dict ticks are counted in travels as a secret: a server's containers get
# none of its own environment (SVC_TICKS is set where the test deploys from).
_ticks = shoal.Secret.from_dict({"SVC_TICKS": os.environ.get("SVC_TICKS", "")})


@app.function(schedule=shoal.Period(seconds=1), secrets=[_ticks])
def tick() -> None:
    # Counted in a Dict of the server's: its containers are jailed, and write no file of
    # the test's.
    name = os.environ.get("SVC_TICKS")
    if name:
        shoal.Dict.from_name(name, create_if_missing=True)[str(time.time_ns())] = 1


@app.function()
def whoami() -> str | None:
    return shoal.current_function_call_id()


class Tripwire(Exception):
    """An exception whose unpickling runs code: it leaves a file named after the process
    that unpickled it in ``folder``."""

    def __init__(self, folder: str) -> None:
        super().__init__(folder)
        self.folder = folder

    def __reduce__(self) -> tuple[object, tuple[str]]:
        mark = os.path.join(self.folder, "{}")
        return (exec, (f"import os; open({mark!r}.format(os.getpid()), 'w').close()",))


@app.function()
def trip(folder: str) -> None:
    raise Tripwire(folder)


@app.function()
def environment() -> dict[str, str]:
    return dict(os.environ)


@app.function()
def probe(function: str, object_id: str, bundle: str = "", app: str = "") -> dict[str, str]:
    """What this container's own token lets it do, tried over its raw channel: call
    ``function`` (a pool key, in ``app``: "" for its own), wait on spawn ``object_id``,
    ask for a deploy and a secret list, and fetch code bundle ``bundle``. Each answer is
    "ok" or the error's text."""
    import pickle
    import threading

    import msgpack

    from shoal import context
    from shoal.protocol import payload
    from shoal.protocol.messages import CallDone, OutputStatus, Reply, Submit, Wait

    channel = context.channel()
    assert channel is not None
    answers: dict[str, str] = {}
    done = threading.Semaphore(0)

    def outcome(name: str):  # type: ignore[no-untyped-def]
        def reply(message: object) -> None:
            if isinstance(message, CallDone):
                ok = message.status == OutputStatus.OK
                answers[name] = "ok" if ok else str(payload.load_exception(message.data, name))
            elif isinstance(message, Reply):
                body = msgpack.unpackb(message.body, raw=False)
                answers[name] = "ok" if message.ok else str(body["message"])
            else:
                return  # a CallItem: not the end
            done.release()

        return reply

    args = pickle.dumps(((2,), {}))
    call = Submit(channel.next_id(), app, function, "", args, False, False)
    channel.send_call(call, outcome("call"))
    channel.send_call(Wait(channel.next_id(), object_id), outcome("wait"))
    channel.request("deploy", msgpack.packb({"app": "svc"}), outcome("deploy"))
    channel.request("secret_list", msgpack.packb({}), outcome("secrets"))
    fetch = {"kind": "bundle", "digest": bundle}
    channel.request("fetch", msgpack.packb(fetch), outcome("fetch"))
    for _ in range(5):
        assert done.acquire(timeout=30)
    return answers
