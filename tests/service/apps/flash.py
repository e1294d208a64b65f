"""Modal's http_server example: a class whose enter hook starts an HTTP server on a port,
served through the gateway with ``shoal.experimental.http_server``."""

import json
import subprocess
import sys
import urllib.request

import shoal
import shoal.experimental

app = shoal.App("flash")


@app.cls()
@shoal.concurrent(max_inputs=10)
@shoal.experimental.http_server(8765, startup_timeout=30)
class Server:
    @shoal.enter()
    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "http.server", "8765", "--bind", "127.0.0.1"]
        )

    @shoal.exit()
    def stop(self) -> None:
        self.proc.terminate()


@app.local_entrypoint()
def main() -> None:
    url = Server.get_web_url()
    with urllib.request.urlopen(url, timeout=60) as reply:
        listing = reply.read().decode()
    print(json.dumps({"served": "Directory listing" in listing, "url": url is not None}))
