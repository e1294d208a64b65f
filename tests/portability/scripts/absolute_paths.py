"""Modal-style: a web app that writes absolute paths. ``/factors`` spawns the work and
redirects to ``/result?call_id=...``, which polls it with ``get(timeout=0)``; ``/``
serves a form that posts to ``/factors``. ``main`` follows them from the endpoint's
URL and prints one JSON line."""

import json
import time
import urllib.request

import fastapi
from starlette.responses import HTMLResponse, RedirectResponse

import shoal as modal
from shoal.functions import FunctionCall

app = modal.App("absolute-paths")
web_app = fastapi.FastAPI()


@app.function()
def factor(number: int) -> list:
    time.sleep(0.5)
    found, d = [], 2
    while number > 1:
        while number % d == 0:
            found.append(d)
            number //= d
        d += 1
    return found


@web_app.get("/")
async def index():
    return HTMLResponse('<form method="get" action="/factors"><input name="number"/></form>')


@web_app.get("/factors")
async def submit(request: fastapi.Request, number: int):
    call = factor.spawn(number)
    return RedirectResponse(request.url.replace(path="/result", query=f"call_id={call.object_id}"))


@web_app.get("/result")
async def poll(call_id: str):
    try:
        return FunctionCall.from_id(call_id).get(timeout=0)
    except TimeoutError:
        return "not ready"


@app.function()
@modal.asgi_app()
def factors_app():
    return web_app


def _get(url: str):
    with urllib.request.urlopen(url, timeout=60) as reply:  # follows the redirect
        return reply.geturl(), json.loads(reply.read()) if "json" in reply.headers.get(
            "content-type", ""
        ) else reply.read().decode()


@app.local_entrypoint()
def main():
    url = factors_app.get_web_url()
    _, page = _get(url)
    where, answer = _get(f"{url}/factors?number=360")
    answers = [answer]
    for _ in range(200):
        if answers[-1] != "not ready":
            break
        time.sleep(0.05)
        answers.append(_get(where)[1])
    print(
        json.dumps(
            [
                'action="/factors"' in page,
                where.split("?")[0] == f"{url}/result",
                answers[0],
                answers[-1],
            ]
        )
    )
