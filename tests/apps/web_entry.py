"""An entrypoint that calls its own web endpoint while ``shoal run`` serves it."""

import httpx

import shoal

app = shoal.App("web-entry")


@app.function()
@shoal.fastapi_endpoint()
def hello(name: str) -> dict:  # type: ignore[type-arg]
    return {"hello": name}


@app.local_entrypoint()
def main() -> None:
    assert hello.web_url is not None
    print(httpx.get(hello.web_url, params={"name": "run"}, timeout=60).json())
