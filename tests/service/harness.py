"""A real ``shoal server`` process on free ports with a private home, for service tests."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from conftest import container_pids, wait_until

APPS = Path(__file__).parent / "apps"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def tls_files(folder: Path) -> tuple[tuple[str, ...], dict[str, str], Path]:
    """A certificate for 127.0.0.1 from a private CA, written under ``folder``: the
    ``shoal server`` options that use it, the environment that trusts the CA, and the CA's
    certificate file."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_file, key_file, ca_file = (folder / n for n in ("cert.pem", "key.pem", "ca.pem"))
    cert.private_key_pem.write_to_path(str(key_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    ca.cert_pem.write_to_path(str(ca_file))
    return (
        ("--tls-cert", str(cert_file), "--tls-key", str(key_file)),
        {"SSL_CERT_FILE": str(ca_file)},
        ca_file,
    )


class ServerProcess:
    """``shoal server`` with its home under ``root``; clients get :attr:`env`."""

    def __init__(
        self, root: Path, extra_env: dict[str, str] | None = None, args: tuple[str, ...] = ()
    ) -> None:
        self.home = root / "home"
        self.apps = root / "apps"
        if not self.apps.exists():
            shutil.copytree(APPS, self.apps)
        self.port = free_port()
        self.http_port = free_port()
        self.extra_env = extra_env or {}
        #: More ``shoal server`` options (``--tls-cert``, ...).
        self.args = args
        self.scheme = "tls" if "--tls-cert" in args else "tcp"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = root / "server.log"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def http(self) -> str:
        scheme = "https" if self.scheme == "tls" else "http"
        return f"{scheme}://127.0.0.1:{self.http_port}"

    @property
    def token(self) -> str:
        return (self.home / "token").read_text().strip()

    @property
    def env(self) -> dict[str, str]:
        """The environment of a client of this server (by URL and token)."""
        env = {**os.environ, **self.extra_env}
        env.pop("SHOAL_HOME", None)
        env["SHOAL_SERVER_URL"] = self.url
        env["SHOAL_TOKEN"] = self.token
        env["SHOAL_CONFIG"] = str(self.home.parent / "no-profile.toml")
        return env

    def start(self) -> ServerProcess:
        (self.home / "server.json").unlink(missing_ok=True)  # left by a killed server
        env = {**os.environ, **self.extra_env, "SHOAL_HOME": str(self.home)}
        env.pop("SHOAL_SERVER_URL", None)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "shoal.cli",
                    "server",
                    "--port",
                    str(self.port),
                    "--http-port",
                    str(self.http_port),
                    *self.args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while not (self.home / "server.json").exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start:\n{self.log.read_text()}")
            time.sleep(0.05)
        return self

    def kill(self) -> None:
        """SIGKILL the server, then wait for its containers and fork servers, which
        see their connections close, to exit on their own."""
        assert self.proc is not None
        orphans = container_pids(self.proc.pid)
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        wait_until(lambda: not any(_alive(pid) for pid in orphans), 30, "orphans to exit")

    def stop(self) -> None:
        """SIGTERM the server: it stops its containers and exits."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("the server did not stop within 20 s of SIGTERM") from None
        assert self.proc.returncode == 0, self.log.read_text()[-2000:]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``shoal ARGS...`` as a client of this server; return what it did."""
        return subprocess.run(
            [sys.executable, "-m", "shoal.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,  # no terminal: commands that would ask refuse instead
        )

    def deploy(self, name: str = "service_app.py", *extra: str) -> str:
        """``shoal deploy`` an app of ``apps/``; return its output."""
        done = self.cli("deploy", str(self.apps / name), *extra)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def client(self, code: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run ``code`` in a fresh client process, in the app's folder (so the app's own
        exception classes unpickle); return what it did."""
        return self.client_with(self.env, code, timeout)

    def start_client(self, code: str, *args: str) -> subprocess.Popen[str]:
        """Start ``code`` (with ``args``) as a client process that runs on while the test
        acts; its output is piped."""
        return subprocess.Popen(
            [sys.executable, "-c", code, *args],
            cwd=self.apps,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def client_with(
        self, env: dict[str, str], code: str, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """:meth:`client` with the environment ``env``."""
        return subprocess.run(
            [sys.executable, "-c", code],
            cwd=self.apps,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (not yet reaped by init) is gone for our purposes
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return False
