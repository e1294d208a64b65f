"""Modal-style: secrets from a server, a dict, a .env file and the local environment.

Needs a server that keeps secret ``shoal-test-db`` (``shoal secret create``), and
``LOCAL_TOKEN`` set where it runs. Prints one JSON line the test reads.
"""

import json
import os

import shoal as modal

HERE = os.path.dirname(os.path.abspath(__file__))

app = modal.App("secrets-example", secrets=[modal.Secret.from_dict({"APP_WIDE": "yes"})])


@app.function(
    secrets=[
        modal.Secret.from_name("shoal-test-db", required_keys=["DB_PASSWORD"]),
        modal.Secret.from_dict({"MODE": "dict", "DROPPED": None}),
        modal.Secret.from_dotenv(os.path.join(HERE, "assets")),
        modal.Secret.from_local_environ(["LOCAL_TOKEN"]),
    ]
)
def read_env() -> dict:
    names = ["APP_WIDE", "DB_PASSWORD", "DB_USER", "MODE", "DROPPED", "FROM_DOTENV", "LOCAL_TOKEN"]
    return {name: os.environ.get(name) for name in names}


@app.local_entrypoint()
def main() -> None:
    seen = read_env.remote()
    here = {name: os.environ.get(name) for name in ("APP_WIDE", "DB_PASSWORD", "FROM_DOTENV")}
    print(json.dumps({"container": seen, "caller": here}))
