"""Images on the local backend: real virtual environments built with uv, real containers.

These tests install a small package from the package index (``six``), as a user's
image would.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import shoal
from portability.runner import shoal_run
from service.harness import ServerProcess
from shoal.exception import ImageBuildError, InvalidError

SCRIPTS = Path(__file__).parent / "scripts"


def test_an_image_is_its_own_environment_and_is_reused(image_cache: str) -> None:
    first = shoal_run(str(SCRIPTS / "images.py"))
    assert first.returncode == 0, first.stderr
    seen = json.loads(first.stdout.strip().splitlines()[-1])
    inside = seen["inside"]
    assert inside["python"].startswith(image_cache)  # the image's interpreter, not ours
    assert inside["six"] == "1.16.0"
    assert inside["mode"] == "loud"
    assert inside["made"] == "built-by-run-commands"  # run_commands ran in the image's root
    assert inside["answer"] == "forty-two"  # add_local_file at /root/data/answer.txt
    assert inside["greeting"] == "hello, shoal"  # add_local_python_source
    assert inside["baked"] == "baked with six 1.16.0"  # run_function, in the image
    assert inside["leaked"] is False  # the caller's packages are not in the image
    assert seen["bare_has_six"] is False  # each image has only its own packages
    assert "building" in first.stdout  # build lines stream to the terminal
    assert "six==1.16.0" in first.stdout

    second = shoal_run(str(SCRIPTS / "images.py"))
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout.strip().splitlines()[-1]) == seen
    assert "building" not in second.stdout  # cached by the digest of its steps


def test_an_image_builds_where_the_server_runs(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, {"SHOAL_IMAGE_CACHE": str(tmp_path / "images")}).start()
    try:
        run = _run_on(server)
    finally:
        server.stop()
    assert run.returncode == 0, run.stderr
    inside = json.loads(run.stdout.strip().splitlines()[-1])["inside"]
    assert inside["python"].startswith(str(tmp_path / "images"))  # the server's cache
    assert inside["six"] == "1.16.0" and inside["greeting"] == "hello, shoal"
    assert inside["leaked"] is False
    assert "[image " in server.log.read_text()  # the build's lines are the server's


def _run_on(server: ServerProcess) -> subprocess.CompletedProcess[str]:
    return shoal_run(str(SCRIPTS / "images.py"), env=server.env)


def test_a_failed_build_stops_the_run_with_the_installers_error() -> None:
    app = shoal.App("bad-image")
    broken = shoal.Image.debian_slim().pip_install("shoal-test-no-such-package==0.0.1")

    @app.function(image=broken, serialized=True)
    def never() -> int:
        return 1

    with pytest.raises(ImageBuildError) as caught, app.run():
        pytest.fail("the app must not start")
    assert "shoal-test-no-such-package" in str(caught.value)
    assert "not found in the package registry" in str(caught.value)  # uv's own words


def test_an_import_the_image_lacks_fails_in_its_containers_only() -> None:
    result = shoal_run(str(SCRIPTS / "image_imports.py"))
    assert result.returncode == 0, result.stderr
    assert "container of image: True" in result.stdout
    # The other image's container skips the first block and raises in its own.
    assert "other image failed on:" in result.stdout
    assert "shoal_test_not_installed_either" in result.stdout


def test_unavailable_bases_and_versions_are_clear_errors() -> None:
    with pytest.raises(InvalidError, match="container engine"):
        shoal.Image.from_registry("python:3.12-slim")
    with pytest.raises(InvalidError, match="container engine"):
        shoal.Image.from_dockerfile("Dockerfile")
    with pytest.raises(InvalidError, match="/etc"):
        shoal.Image.debian_slim().add_local_file(__file__, "/etc/shoal-test.py")

    app = shoal.App("old-python")

    @app.function(image=shoal.Image.debian_slim(python_version="3.99"), serialized=True)
    def f() -> int:
        return 1

    mine = f"{sys.version_info.major}.{sys.version_info.minor}"
    with pytest.raises(ImageBuildError, match=rf"not installed.*available: .*{mine}"), app.run():
        pass


def test_every_web_kind_serves_from_an_image_with_only_the_users_package() -> None:
    done = shoal_run(str(SCRIPTS / "web_images.py"))
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen == {
        "fastapi": {"kind": "fastapi", "double": 42},
        "asgi": {"kind": "asgi"},
        "wsgi": {"kind": "wsgi"},
        "web_server": True,
    }


def _other_pyenv_python() -> str | None:
    """A Python series pyenv installed here that this process does not run, if any (its
    shim refuses it while it is not the selected version)."""
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    mine = f"{sys.version_info.major}.{sys.version_info.minor}"
    for folder in sorted(glob.glob(os.path.join(root, "versions", "3.1[2-9]*"))):
        series = ".".join(os.path.basename(folder).split(".")[:2])
        if series != mine and os.access(os.path.join(folder, "bin", "python3"), os.X_OK):
            return series
    return None


def test_python_version_finds_an_interpreter_behind_pyenv(image_cache: str) -> None:
    series = _other_pyenv_python()
    if series is None:
        pytest.skip("no other Python installed by pyenv here")
    env = {**os.environ, "SHOAL_TEST_PYTHON": series}
    done = shoal_run(str(SCRIPTS / "other_python.py"), env=env)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["inside"] == [int(part) for part in series.split(".")]
    assert seen["caller"] != seen["inside"]


def test_apt_packages_missing_on_the_host_are_named() -> None:
    if not os.path.exists("/usr/bin/dpkg-query"):
        pytest.skip("not a Debian host")
    app = shoal.App("apt")
    image = shoal.Image.debian_slim().apt_install("coreutils", "shoal-test-no-such-deb")

    @app.function(image=image, serialized=True)
    def f() -> int:
        return 1

    with pytest.raises(ImageBuildError) as caught, app.run():
        pass
    assert "shoal-test-no-such-deb" in str(caught.value)
    assert "coreutils" not in str(caught.value).split("not installed")[0]  # present: not named
    assert "SHOAL_ALLOW_APT=1" in str(caught.value)


def test_the_example_runs() -> None:
    example = Path(__file__).parents[2] / "examples" / "images_and_secrets.py"
    done = shoal_run(str(example))
    assert done.returncode == 0, done.stderr
    assert "hello from six" in done.stdout and "API_KEY has 14 chars" in done.stdout
    assert "API_KEY here: None" in done.stdout


def test_uv_pip_install_passes_its_index_options_to_requirements_files(tmp_path: Path) -> None:
    listed = tmp_path / "requirements.txt"
    listed.write_text("six\n")
    image = shoal.Image.debian_slim().uv_pip_install(
        "attrs", requirements=[str(listed)], index_url="http://127.0.0.1:9/simple", pre=True
    )
    packages, requirements = image.recipe.steps[-2:]
    assert (packages.kind, requirements.kind) == ("pip", "requirements")
    for step in (packages, requirements):
        assert "--index-url=http://127.0.0.1:9/simple" in step.args
        assert "--prerelease=allow" in step.args  # uv's spelling of --pre
    assert requirements.args[0] == str(listed)
