"""Modal's basic_web: a class whose only methods are web endpoints, and a class that mixes
endpoints, plain methods and batched methods on the same containers."""

import json
import os
import urllib.request

import shoal

app = shoal.App("web-class")


@app.cls()
class WebApp:
    @shoal.enter()
    def startup(self) -> None:
        self.greeting = "hello"

    @shoal.fastapi_endpoint()
    def web(self, name: str = "world") -> dict:
        return {"message": f"{self.greeting} {name}", "pid": os.getpid()}

    @shoal.fastapi_endpoint(method="POST")
    def echo(self, item: dict) -> dict:
        return {"echo": item, "pid": os.getpid()}


@app.cls()
class Mixed:
    @shoal.enter()
    def startup(self) -> None:
        self.offset = 100

    @shoal.method()
    def add(self, x: int) -> int:
        return self.offset + x

    @shoal.batched(max_batch_size=4, wait_ms=10)
    def doubles(self, xs: list[int]) -> list[int]:
        return [2 * x for x in xs]

    @shoal.asgi_app()
    def api(self):
        from fastapi import FastAPI

        web = FastAPI()

        @web.get("/ping")
        def ping() -> dict:
            return {"pong": self.offset, "pid": os.getpid()}

        return web


def fetch(url: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as reply:
        return json.load(reply)


@app.local_entrypoint()
def main() -> None:
    web = fetch(WebApp().web.get_web_url() + "?name=bob")
    echo = fetch(WebApp().echo.get_web_url(), {"a": 1})
    ping = fetch(Mixed().api.get_web_url() + "/ping")
    print(
        json.dumps(
            {
                "web": web["message"],
                "echo": echo["echo"],
                "same_container": web["pid"] == echo["pid"],
                "ping": ping["pong"],
                "add": Mixed().add.remote(2),
                "doubles": list(Mixed().doubles.map([1, 2, 3])),
            }
        )
    )
