"""Secrets: named ones kept by a real server, and values given in the script."""

from __future__ import annotations

import os
import subprocess
import sys
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

    deleted = server.cli("secret", "delete", "shoal-test-db", "-y")
    assert deleted.returncode == 0, deleted.stderr
    missing = shoal_run(str(SCRIPT), env=env)
    assert missing.returncode == 1
    assert "no secret 'shoal-test-db'" in missing.stderr
    assert "shoal secret create shoal-test-db" in missing.stderr


def test_named_secrets_without_a_server_live_in_the_home(tmp_path: Path) -> None:
    env = {**os.environ, "SHOAL_HOME": str(tmp_path / "home"), "LOCAL_TOKEN": "x"}
    env.pop("SHOAL_SERVER_URL", None)
    shoal_cli = [sys.executable, "-m", "shoal.cli", "secret"]
    created = subprocess.run(
        [*shoal_cli, "create", "shoal-test-db", "DB_PASSWORD=pw", "DB_USER=u"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert created.returncode == 0, created.stderr
    seen = run_json(SCRIPT, env)
    assert seen["container"]["DB_PASSWORD"] == "pw"  # found in the home's own store
    listed = subprocess.run([*shoal_cli, "list"], env=env, capture_output=True, text=True)
    assert "shoal-test-db" in listed.stdout and "pw" not in listed.stdout


def test_missing_secrets_and_bad_values_are_clear_errors() -> None:
    app = shoal.App("no-such-secret")

    @app.function(secrets=[shoal.Secret.from_name("shoal-test-absent")], serialized=True)
    def f() -> int:
        return 1

    with pytest.raises(NotFoundError, match="shoal secret create shoal-test-absent"), app.run():
        pass
    with pytest.raises(InvalidError, match="environment variable name"):
        shoal.Secret.from_dict({"NOT A NAME": "x"})
    with pytest.raises(InvalidError, match="NOT_SET_ANYWHERE"):
        shoal.Secret.from_local_environ(["NOT_SET_ANYWHERE"])
    with pytest.raises(InvalidError, match=r"list of shoal\.Secret"):
        app.function(secrets=shoal.Secret.from_dict({}))


def _read_variable(name: str) -> str | None:
    return os.environ.get(name)


def test_with_options_takes_secrets_env_and_volumes(tmp_path: Path) -> None:
    app = shoal.App("variants")
    base = app.function(serialized=True)(_read_variable)
    secret = shoal.Secret.from_dict({"TOKEN": "s3cr3t-value"})
    given = base.with_options(secrets=[secret])
    first, second = (base.with_options(env={"LEVEL": level}) for level in ("low", "high"))
    assert first.spec.name != second.spec.name  # different values: different pools
    assert "s3cr3t" not in given.spec.name and "low" not in first.spec.name  # never shown
    volume = base.with_options(
        volumes={"/data": shoal.Volume.from_name("v", create_if_missing=True)}
    )
    assert volume.spec.volumes == (("/data", "v", True),)
    with pytest.warns(UserWarning, match="routing_region"):
        base.with_options(routing_region="eu")
    with pytest.raises(InvalidError, match="env="):
        base.with_options(env=["LEVEL=x"])
    os.environ["SHOAL_HOME"], home = str(tmp_path / "home"), os.environ.get("SHOAL_HOME")
    try:
        with app.run():
            assert given.remote("TOKEN") == "s3cr3t-value"
            assert [first.remote("LEVEL"), second.remote("LEVEL")] == ["low", "high"]
            assert base.remote("TOKEN") is None  # the original keeps its own (no) secrets
    finally:
        if home is None:
            del os.environ["SHOAL_HOME"]
        else:
            os.environ["SHOAL_HOME"] = home
