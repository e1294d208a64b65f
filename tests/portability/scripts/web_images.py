"""Every web kind inside an image that installs only the user's own package (Modal's
examples do this): the container runtime brings what it needs to serve each kind.

Run as ``shoal run web_images.py``; it prints one JSON line the test reads.
"""

import json
import subprocess
import urllib.request

import shoal as modal

app = modal.App("web-images")
bare = modal.Image.debian_slim().pip_install("six==1.16.0")


@app.function(image=bare)
@modal.fastapi_endpoint()
def typed(x: int = 2) -> dict:
    return {"kind": "fastapi", "double": 2 * x}


@app.function(image=modal.Image.debian_slim().pip_install("starlette"))
@modal.asgi_app()
def starlette_app():
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def home(request):
        return JSONResponse({"kind": "asgi"})

    return Starlette(routes=[Route("/", home)])


@app.function(image=modal.Image.debian_slim().pip_install("flask"))
@modal.wsgi_app()
def flask_app():
    from flask import Flask

    web = Flask(__name__)

    @web.get("/")
    def home():
        return {"kind": "wsgi"}

    return web


@app.function(image=bare)
@modal.web_server(8765, startup_timeout=30)
def plain_server():
    subprocess.Popen(["python", "-m", "http.server", "8765", "--bind", "127.0.0.1"])


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=120) as reply:
        return reply.read().decode()


@app.local_entrypoint()
def main() -> None:
    seen = {
        "fastapi": json.loads(fetch(typed.get_web_url() + "?x=21")),
        "asgi": json.loads(fetch(starlette_app.get_web_url())),
        "wsgi": json.loads(fetch(flask_app.get_web_url())),
        "web_server": "Directory listing" in fetch(plain_server.get_web_url()),
    }
    print(json.dumps(seen))
