"""Web endpoints: every HTTP request is an input of the function's autoscaling pool.

shoal serve examples/web.py
curl -X POST localhost:8000/predict -H 'content-type: application/json' -d '{"x": 1}'
curl localhost:8000/api/hello/ada
"""

import shoal

app = shoal.App("web")


@app.function(max_containers=4)
@shoal.concurrent(max_inputs=100)
@shoal.fastapi_endpoint(method="POST")
async def predict(item: dict) -> dict:  # type: ignore[type-arg]
    return {"echo": item}


@app.function()
@shoal.concurrent(max_inputs=50)
@shoal.asgi_app()
def api():  # type: ignore[no-untyped-def]
    from fastapi import FastAPI

    web = FastAPI()

    @web.get("/hello/{name}")
    async def hello(name: str) -> dict:  # type: ignore[type-arg]
        return {"hello": name}

    return web
