"""Web endpoints of every kind, for the gateway tests."""

import asyncio
import os
from pathlib import Path

import shoal

app = shoal.App("web")


@app.function(max_containers=4)
@shoal.concurrent(max_inputs=100)
@shoal.fastapi_endpoint(method="POST")
async def echo(item: dict) -> dict:  # type: ignore[type-arg]
    return {"echo": item}


@app.function()
@shoal.fastapi_endpoint()
def square(x: int) -> dict:  # type: ignore[type-arg]
    return {"square": x * x}


@app.function()
@shoal.fastapi_endpoint(requires_auth=True)
def secret() -> dict:  # type: ignore[type-arg]
    return {"secret": 42}


@app.function(max_containers=5)
@shoal.concurrent(max_inputs=100)
@shoal.fastapi_endpoint()
async def gated(gate: str) -> dict:  # type: ignore[type-arg]
    while not Path(gate).exists():  # noqa: ASYNC110, ASYNC240 - a file gate, in a test app
        await asyncio.sleep(0.02)
    return {"pid": os.getpid()}


@app.function()
@shoal.fastapi_endpoint()
async def sleepy(seconds: float) -> dict:  # type: ignore[type-arg]
    await asyncio.sleep(seconds)
    return {"slept": seconds}


@app.function()
@shoal.fastapi_endpoint()
def crash() -> dict:  # type: ignore[type-arg]
    os._exit(7)


@app.function()
@shoal.concurrent(max_inputs=20)
@shoal.asgi_app()
def api():  # type: ignore[no-untyped-def]
    from fastapi import FastAPI, WebSocket
    from fastapi.responses import StreamingResponse

    web = FastAPI()

    @web.get("/hello/{name}")
    async def hello(name: str) -> dict:  # type: ignore[type-arg]
        return {"hello": name}

    @web.get("/stream")
    async def stream(gate: str) -> StreamingResponse:
        async def chunks():  # type: ignore[no-untyped-def]
            yield b"first\n"
            while not Path(gate).exists():  # noqa: ASYNC110, ASYNC240 - a file gate
                await asyncio.sleep(0.02)
            yield b"second\n"

        return StreamingResponse(chunks(), media_type="text/plain")

    @web.get("/big")
    async def big(megabytes: int) -> StreamingResponse:
        async def chunks():  # type: ignore[no-untyped-def]
            block = b"x" * (1024 * 1024)
            for _ in range(megabytes):
                yield block

        return StreamingResponse(chunks(), media_type="application/octet-stream")

    @web.websocket("/ws")
    async def ws(socket: WebSocket) -> None:
        await socket.accept()
        while True:
            text = await socket.receive_text()
            if text == "bye":
                await socket.close()
                return
            await socket.send_text(f"echo: {text}")

    return web


@app.function()
@shoal.wsgi_app()
def classic():  # type: ignore[no-untyped-def]
    def application(environ, start_response):  # type: ignore[no-untyped-def]
        body = f"wsgi says {environ['PATH_INFO']}".encode()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]

    return application


#: A fixed port: web_server containers listen on the host, one per port.
SERVER_PORT = 18765


@app.function(max_containers=1)
@shoal.web_server(SERVER_PORT)
def own_server() -> None:
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = f"own server saw {self.path}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", SERVER_PORT), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
