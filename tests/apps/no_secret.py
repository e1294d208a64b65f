"""An app that cannot start: its function needs a secret nobody created."""

import shoal

app = shoal.App("no-secret")


@app.function(secrets=[shoal.Secret.from_name("shoal-test-never-created")])
def missing_secret() -> None:
    pass


@app.local_entrypoint()
def main() -> None:
    missing_secret.remote()
