"""Secrets: named ones kept by a real server, and values given in the script."""

from __future__ import annotations

from pathlib import Path

import pytest

import shoal
from portability.runner import run_json, shoal_run
from service.harness import ServerProcess
from shoal.exception import InvalidError, NotFoundError

SCRIPT = Path(__file__).parent / "scripts" / "secrets_app.py"


def test_secrets_reach_containers_only(server: ServerProcess) -> None:
    created = server.cli("secret", "create", "shoal-test-db", "DB_PASSWORD=hunter2", "DB_USER=app")
    assert created.returncode == 0, created.stderr
    again = server.cli("secret", "create", "shoal-test-db", "DB_PASSWORD=x")
    assert again.returncode != 0 and "--force" in again.stderr  # no silent overwrite

    listed = server.cli("secret", "list")
    assert "shoal-test-db" in listed.stdout and "DB_PASSWORD, DB_USER" in listed.stdout
    assert "hunter2" not in listed.stdout + listed.stderr  # values are never printed

    env = {**server.env, "LOCAL_TOKEN": "from-my-shell"}
    seen = run_json(SCRIPT, env)
    assert seen["container"] == {
        "APP_WIDE": "yes",
        "DB_PASSWORD": "hunter2",
        "DB_USER": "app",
        "MODE": "from-dotenv",  # the .env file comes after from_dict: later ones win
        "DROPPED": None,
        "FROM_DOTENV": "from the file",
        "LOCAL_TOKEN": "from-my-shell",
    }
    assert seen["caller"] == {"APP_WIDE": None, "DB_PASSWORD": None, "FROM_DOTENV": None}

    deleted = server.cli("secret", "delete", "shoal-test-db")
    assert deleted.returncode == 0, deleted.stderr
    missing = shoal_run(str(SCRIPT), env=env)
    assert missing.returncode == 1
    assert "no secret 'shoal-test-db'" in missing.stderr
    assert "shoal secret create shoal-test-db" in missing.stderr


def test_a_named_secret_needs_a_server_and_values_are_checked() -> None:
    app = shoal.App("no-server")

    @app.function(secrets=[shoal.Secret.from_name("anything")], serialized=True)
    def f() -> int:
        return 1

    with pytest.raises(NotFoundError, match="needs a shoal server"), app.run():
        pass
    with pytest.raises(InvalidError, match="environment variable name"):
        shoal.Secret.from_dict({"NOT A NAME": "x"})
    with pytest.raises(InvalidError, match="NOT_SET_ANYWHERE"):
        shoal.Secret.from_local_environ(["NOT_SET_ANYWHERE"])
    with pytest.raises(InvalidError, match=r"list of shoal\.Secret"):
        app.function(secrets=shoal.Secret.from_dict({}))
