"""Web endpoints for the gateway abuse tests: uploads, and websockets that flood or never read."""

import asyncio
import os

import shoal

app = shoal.App("abused_web")


@app.function()
@shoal.concurrent(max_inputs=100)
@shoal.asgi_app()
def site():  # type: ignore[no-untyped-def]
    from fastapi import FastAPI, Request, WebSocket

    web = FastAPI()

    @web.get("/ping")
    async def ping() -> dict:  # type: ignore[type-arg]
        return {"pid": os.getpid()}

    @web.post("/upload")
    async def upload(request: Request) -> dict:  # type: ignore[type-arg]
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
        return {"size": size}

    @web.post("/slow-reader")
    async def slow_reader(request: Request) -> dict:  # type: ignore[type-arg]
        """Reads its body slowly: the client must be held back, not buffered."""
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            await asyncio.sleep(0.001)
        return {"size": size}

    @web.websocket("/sink")
    async def sink(ws: WebSocket) -> None:
        """Accepts, then reads nothing until told: a flooding client must be held back."""
        await ws.accept()
        await asyncio.sleep(float(ws.query_params.get("pause", "0")))
        total = 0
        while True:
            message = await ws.receive_bytes()
            if message == b"end":
                await ws.send_json({"received": total})
                return
            total += 1

    @web.websocket("/firehose")
    async def firehose(ws: WebSocket) -> None:
        """Sends ``n`` messages of 64 KiB as fast as the gateway lets it."""
        await ws.accept()
        n = int(ws.query_params["n"])
        block = b"x" * 65536
        for _ in range(n):
            await ws.send_bytes(block)
        await ws.send_bytes(b"done")
        await ws.close()

    return web
