"""An app whose functions look around the container they run in (deployed to a server
that isolates its containers)."""

from __future__ import annotations

import os
import socket

import shoal

app = shoal.App("jailed")


def _readable(path: str) -> bool:
    try:
        with open(path, "rb") as found:
            found.read(1)
        return True
    except OSError:
        return False


def _connects(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


@app.function()
def look(home: str, port: int, bundles: str) -> dict[str, object]:
    """What this container can see and do of the host's."""
    with open("/proc/self/status") as status:
        fields = dict(line.split(":\t", 1) for line in status if ":\t" in line)
    try:
        with open("/written-by-a-container", "w"):
            pass
        wrote_root = True
    except OSError:
        wrote_root = False
    return {
        "shadow": _readable("/etc/shadow"),
        "token": _readable(os.path.join(home, "token")),
        "home": os.path.exists(home),
        "other bundles": os.path.exists(bundles),
        "server port": _connects(port),
        "processes": len([p for p in os.listdir("/proc") if p.isdigit()]),
        "no new privs": fields["NoNewPrivs"].strip(),
        "seccomp": fields["Seccomp"].strip(),
        "capabilities": fields["CapEff"].strip(),
        "wrote root": wrote_root,
        "token env": [k for k in os.environ if k in ("SHOAL_TOKEN", "SHOAL_HOME")],
    }


@app.function()
def square(x: int) -> int:
    return x * x


@app.function()
def pid() -> int:
    return os.getpid()


@app.function()
def in_a_sandbox(other: str) -> dict[str, object]:
    """Make a sandbox from inside a function (of this app, whichever app is named), use
    it, and try to reach another app's."""
    sb = shoal.Sandbox.create(app=app)
    try:
        p = sb.exec("sh", "-c", "echo $((6 * 7))")
        out, code = p.stdout.read(), p.wait()
        listed = [s.object_id for s in shoal.Sandbox.list()]
    finally:
        sb.terminate()
    try:
        shoal.Sandbox.from_id(other).terminate()
        reached = "yes"
    except shoal.exception.NotFoundError as exc:
        reached = str(exc)
    try:
        shoal.Sandbox.create(app=app, secrets=[shoal.Secret.from_name("server-wide")])
        named = "allowed"
    except shoal.exception.InvalidError as exc:
        named = str(exc)
    try:  # an image is pickled, and its build runs on the server's machine
        shoal.Sandbox.create(app=app, image=shoal.Image.debian_slim().run_commands("true"))
        imaged = "allowed"
    except shoal.exception.InvalidError as exc:
        imaged = str(exc)
    return {
        "out": out,
        "code": code,
        "listed": sb.object_id in listed,
        "other": reached,
        "named secret": named,
        "image": imaged,
    }


@app.function(memory=(64, 256))
def hog(mib: int) -> int:
    """Hold ``mib`` MiB at once (its limit is 256)."""
    held = bytearray(mib * 1024 * 1024)
    return len(held) // (1024 * 1024)


tooled = shoal.Image.debian_slim().run_commands(
    "useradd --uid 1000 shoal-jailed-user",
    "mkdir -p /opt/shoal-jailed-tool && echo v1 > /opt/shoal-jailed-tool/version",
)


@app.function(image=tooled)
def built() -> dict[str, object]:
    """What its image's build commands made (run in a build jail: into the image)."""
    import pwd

    with open("/opt/shoal-jailed-tool/version") as version:
        return {"version": version.read().strip(), "user": pwd.getpwuid(1000).pw_name}
