"""Running a process isolated, with bubblewrap: what it sees, may do and may use.

Every isolated process gets, from ``bwrap`` (Debian's ``bubblewrap``; :func:`problem`
checks at start that it works here and says what is missing when it does not):

- new user, mount, PID, IPC, UTS and cgroup namespaces, and a network namespace with
  only its own loopback; with :attr:`Jail.network`, its starter attaches a user-space
  stack to that namespace (:mod:`shoal.backends.netstack`);
- a root of its own: the host's ``/usr`` (and ``/bin``, ``/lib``, ``/lib64``, ``/sbin``,
  which are links into it or bound read-only), a few files of ``/etc`` that programs need
  (certificates, resolver, time zone, the linker's cache), and nothing else of the host's
  ``/etc``, home or state; :attr:`Jail.ro` and :attr:`Jail.rw` bind more where given; a
  private ``/tmp`` and working directory, tmpfs capped at :attr:`Jail.tmp_bytes` each;
  the root itself read-only;
- ``--die-with-parent``, ``--new-session`` (no terminal to type into), no_new_privs (so a
  setuid binary gains nothing), every capability dropped, and the seccomp filter of
  :mod:`shoal.backends.seccomp`;
- rlimits (file size, open files, no core dumps) and, where a cgroup hierarchy is
  writable, its own memory, PID and CPU limits (:mod:`shoal.backends.cgroups`).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import glob
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from shoal.backends import cgroups, netstack, seccomp

#: Files of the host's /etc an isolated process sees (those that exist), read-only.
ETC = (
    # Certificates and OpenSSL's settings, never /etc/ssl/private: a jail runs as root of its
    # own user namespace, which the host's root-owned keys would let read.
    "/etc/ssl/certs",
    "/etc/ssl/openssl.cnf",
    "/etc/ca-certificates",
    "/etc/ca-certificates.conf",
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/nsswitch.conf",
    "/etc/localtime",
    "/etc/timezone",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/alternatives",
    "/etc/mime.types",
)
#: Top-level links and folders of a merged-/usr system, bound as the host has them.
_TOP = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")

#: The account an isolated process runs as (root of its own user namespace, holding
#: no capability), in the /etc/passwd and /etc/group it sees.
PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"
#: Account files an image's own /etc holds (made by its build: ``useradd`` and the like),
#: which a jail of that image sees instead of the two above; and the settings of the
#: host's /etc that switching to one of its users reads (``su``, ``runuser``: PAM).
ACCOUNT_FILES = ("passwd", "group", "shadow", "gshadow")
USER_ETC = ("/etc/pam.d", "/etc/pam.conf", "/etc/security", "/etc/login.defs", "/etc/environment")
#: With :attr:`Jail.users`, uids and gids 1..65535 inside are these plus the host's
#: ``SUB_BASE``... (systemd's range for containers' users, 524288 up): users of no one on
#: the host. Root inside stays the server's own user, as without.
SUB_BASE = 524288
SUB_COUNT = 65535
#: What root inside a jail with users keeps (Docker's default set, less raw sockets,
#: device nodes, chroot and file capabilities): enough to chown its files and to become,
#: or signal, one of its users. They hold over its own user namespace's ids alone.
USER_CAPS = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
)


@dataclass(frozen=True, slots=True)
class Jail:
    """What one isolated process tree sees and may use."""

    #: Host paths bound read-only, as (host path, path inside).
    ro: tuple[tuple[str, str], ...] = ()
    #: Host paths bound writable.
    rw: tuple[tuple[str, str], ...] = ()
    #: Paths inside a bind above hidden: a folder under an empty tmpfs, a file unreadable.
    hidden: tuple[str, ...] = ()
    #: More private writable tmpfs folders (capped at :attr:`tmp_bytes` each).
    tmpfs: tuple[str, ...] = ()
    #: Host device files it may use (a GPU's), bound at their own paths.
    devices: tuple[str, ...] = ()
    #: Its working directory: a private tmpfs (unless a bind above covers it).
    workdir: str = "/root"
    #: Bytes each of /tmp and the working directory may hold.
    tmp_bytes: int = 512 * 1024 * 1024
    #: False: only its own loopback; True: outbound through a user-space stack.
    network: bool = False
    hostname: str = "shoal"
    env: tuple[tuple[str, str], ...] = ()
    #: Largest file it may write, files it may hold open.
    file_bytes: int = 1024 * 1024 * 1024
    open_files: int = 1024
    limits: cgroups.Limits = field(default_factory=cgroups.Limits)
    #: A host folder holding the image's own :data:`ACCOUNT_FILES` (None: root alone).
    accounts: str | None = None
    #: Users beside root: a user namespace of :data:`SUB_COUNT` more ids and the
    #: capabilities of :data:`USER_CAPS` for root inside (:func:`user_namespace`).
    users: bool = False
    #: A host folder bound writable as the root (an image build: what its commands write
    #: anywhere lands there); None: an empty root, read-only.
    root: str | None = None


@functools.cache
def bwrap() -> str | None:
    """The bwrap executable, if installed."""
    return shutil.which("bwrap")


@functools.cache
def problem() -> str:
    """ "" when isolation works here, else what is missing (said at start)."""
    path = bwrap()
    if path is None:
        return "bubblewrap is not installed (Debian: apt-get install bubblewrap)"
    try:
        seccomp.program()
    except seccomp.UnsupportedArchitecture as exc:
        return str(exc)
    argv = [path, "--unshare-all", "--die-with-parent", "--cap-drop", "ALL"]
    argv += [*_base_mounts(), "--", "/bin/true"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bubblewrap does not run here: {exc}"
    if done.returncode != 0:
        why = done.stderr.strip().splitlines()[-1:] or [f"exit code {done.returncode}"]
        return f"bubblewrap cannot make namespaces here: {why[0]} (user namespaces off?)"
    return ""


def _base_mounts(root: str | None = None) -> list[str]:
    """The host's /usr and its top-level links, /proc and /dev (``root``: the host folder
    the jail's root is, which may hold the links from an earlier jail)."""
    args = ["--ro-bind", "/usr", "/usr"]
    for top in _TOP:
        if os.path.islink(top):
            made = os.path.join(root, top[1:]) if root is not None else ""
            if not (made and os.path.islink(made) and os.readlink(made) == os.readlink(top)):
                args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    return [*args, "--proc", "/proc", "--dev", "/dev"]


def bwrap_args(
    jail: Jail,
    private: str,
    seccomp_fd: int,
    info_fd: int | None = None,
    userns_fd: int | None = None,
) -> list[str]:
    """bwrap's options for ``jail`` (everything before the command); ``private`` is a
    host folder of this jail alone (a build's resolver is written there: see
    :func:`_etc_binds`), ``seccomp_fd`` an open file holding :func:`seccomp.program`; bwrap writes
    the jail's first process's pid (as JSON) to ``info_fd`` when given, and enters the
    user namespace ``userns_fd`` (:func:`user_namespace`) instead of making one."""
    path = bwrap()
    assert path is not None
    args = [path, *(["--userns", str(userns_fd)] if userns_fd is not None else ["--unshare-user"])]
    args += [
        "--unshare-ipc",
        "--unshare-pid",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
    ]
    for cap in USER_CAPS if jail.users else ():
        args += ["--cap-add", cap]
    args += ["--hostname", jail.hostname, "--clearenv"]
    args.append("--unshare-net")  # its own namespace; Jail.network: netstack joins it out
    if info_fd is not None:
        args += ["--info-fd", str(info_fd)]
    if jail.root is not None:
        args += ["--bind", jail.root, "/"]
    args += _base_mounts(jail.root)
    size = str(jail.tmp_bytes)
    binds = _etc_binds(jail, private)
    binds += [("--ro-bind", h, i) for h, i in jail.ro] + [("--bind", h, i) for h, i in jail.rw]
    binds += [("--tmpfs", "", inside) for inside in jail.hidden]
    binds += [("--tmpfs", size, inside) for inside in jail.tmpfs]
    binds += [("--dev-bind", device, device) for device in jail.devices]
    args += ["--perms", "1777", "--size", size, "--tmpfs", "/tmp"]
    if jail.workdir not in ("/", "/tmp") and not _covered(jail.workdir, jail):
        args += ["--size", size, "--tmpfs", jail.workdir]
    if jail.users:  # the folders bubblewrap makes for mount points are 0700: others' too
        binds += _parents(binds)
    args += _mounts(binds)
    for name, value in jail.env:
        args += ["--setenv", name, value]
    args += ["--chdir", jail.workdir]
    if jail.root is None:
        args += ["--remount-ro", "/"]
    return [*args, "--seccomp", str(seccomp_fd)]


def _mounts(binds: list[tuple[str, str, str]]) -> list[str]:
    """bwrap's options for ``binds`` (kind, host path or tmpfs size, path inside),
    shallow mount points first (a bind beneath another must come after it; the sort is
    stable, so /etc's files keep their order)."""
    args: list[str] = []
    for kind, host, inside in sorted(binds, key=lambda b: b[2].count("/")):
        if kind == "--dir":
            args += ["--perms", "0755", kind, inside]
        elif kind == "--tmpfs" and host:
            args += ["--size", host, kind, inside]
        elif kind == "--tmpfs" and os.path.isfile(inside):  # a hidden file: unreadable
            args += ["--ro-bind", "/dev/null", inside]
        elif kind == "--tmpfs":  # hidden: empty, and nothing may be written there
            args += [kind, inside, "--remount-ro", inside]
        else:
            args += [kind, host, inside]
    return args


def _parents(binds: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """``--dir`` entries (made 0755) for the folders holding ``binds``' mount points."""
    targets = {inside for _, _, inside in binds}
    parents = {os.path.dirname(inside) for inside in targets} - targets - {"/"}
    return [("--dir", "", parent) for parent in sorted(parents)]


def _etc_binds(jail: Jail, private: str) -> list[tuple[str, str, str]]:
    """What ``jail``'s /etc is made of: one folder (:func:`etc_folder`) and its image's
    account files over it; or, for a build (whose /etc is its image's own, writable), the
    host's files bound one by one over that, and the resolver written in ``private``."""
    if jail.root is None:
        binds = [("--ro-bind", etc_folder(jail.network, jail.accounts is not None), "/etc")]
        if jail.accounts is not None:
            for name in ACCOUNT_FILES:
                file = os.path.join(jail.accounts, name)
                if os.path.isfile(file) and not os.path.islink(file):
                    binds.append(("--ro-bind", file, f"/etc/{name}"))
        return binds
    names = [*ETC, *(USER_ETC if jail.users else ())]
    binds = [("--ro-bind", name, name) for name in names if os.path.exists(name)]
    if jail.network:  # the user-space stack's resolver, not the host's (maybe 127.0.0.53)
        binds = [b for b in binds if b[2] != "/etc/resolv.conf"]
        resolver = os.path.join(private, "resolv.conf")
        with open(resolver, "w") as out:
            out.write(netstack.RESOLV_CONF)
        binds.append(("--ro-bind", resolver, "/etc/resolv.conf"))
    return binds


#: The account files an image's build starts with (see :func:`seed_accounts`).
_ACCOUNTS = {
    "passwd": PASSWD,
    "group": GROUP,
    "shadow": "root:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n",
    "gshadow": "root:*::\nnogroup:*::\n",
}
#: Built /etc folders, by whether the jail has a network and an image's accounts: (the
#: host files' state, folder).
_etc_folders: dict[tuple[bool, bool], tuple[tuple[object, ...], str]] = {}
_etc_lock = threading.Lock()


def etc_folder(network: bool, accounts: bool = False) -> str:
    """The /etc every jail of this process sees, read-only, as one bind (each of its
    files bound alone cost a sandbox's start some 4 ms): copies of the host's :data:`ETC`
    and :data:`USER_ETC`, a jail's own ``passwd`` and ``group``, and, with a ``network``,
    the user-space stack's resolver; with ``accounts``, empty files where an image's
    ``shadow`` and ``gshadow`` are bound. Built once, and again when one of the host's
    changes (a jail keeps the copy it started with)."""
    sources = [*ETC, *USER_ETC]
    state = tuple(_state_of(path) for path in sources)
    key = (network, accounts)
    with _etc_lock:
        built = _etc_folders.get(key)
        if built is not None and built[0] == state:
            return built[1]
        if not _etc_folders:
            sweep_folders(_ETC_PREFIX)
            atexit.register(_remove_etc_folders)
        folder = os.path.join(private_folder(_ETC_PREFIX), "etc")
        _fill_etc(folder, sources, network, accounts)
        _etc_folders[key] = (state, folder)
        _etc_made.append(os.path.dirname(folder))
        return folder


_ETC_PREFIX = "shoal-etc-"
#: Every /etc folder this process built (a running jail may still hold an old one).
_etc_made: list[str] = []


def _state_of(path: str) -> object:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_ino, info.st_mtime_ns, info.st_size)


def _fill_etc(folder: str, sources: list[str], network: bool, accounts: bool) -> None:
    """Copy ``sources`` into ``folder``: only what any user of the host may read (PAM's
    ``/etc/security/opasswd``, say, holds old password hashes, readable by root alone)."""
    os.mkdir(folder, 0o755)
    for source in sources:
        target = os.path.join(folder, os.path.relpath(source, "/etc"))
        os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
        if os.path.isdir(source):
            shutil.copytree(source, target, symlinks=True, ignore=_private, dirs_exist_ok=True)
        elif os.path.exists(source) and _public(source):
            shutil.copy2(source, target)
    own = {"passwd": PASSWD, "group": GROUP}
    if accounts:  # mount points for an image's own (mode 0, should one ever show)
        own.update({"shadow": "", "gshadow": ""})
    if network:
        own["resolv.conf"] = netstack.RESOLV_CONF
    for name, text in own.items():
        path = os.path.join(folder, name)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        with open(path, "w") as out:
            out.write(text)
        os.chmod(path, 0 if "shadow" in name else 0o644)


def _public(path: str) -> bool:
    try:
        return bool(os.stat(path).st_mode & stat.S_IROTH)
    except OSError:
        return False


def _private(folder: str, names: list[str]) -> set[str]:
    """The entries of ``folder`` not for a jail (see :func:`_fill_etc`)."""
    return {name for name in names if not _public(os.path.join(folder, name))}


def _remove_etc_folders() -> None:
    for parent in _etc_made:
        shutil.rmtree(parent, ignore_errors=True)


def seed_accounts(etc: str) -> None:
    """Start an image's own /etc folder ``etc`` (a build's): the accounts of a jail, and
    the host's settings for adding users (``useradd``'s defaults and ``/etc/skel``)."""
    os.makedirs(etc, exist_ok=True)
    for name, text in _ACCOUNTS.items():
        with open(os.path.join(etc, name), "w") as out:
            out.write(text)
    os.chmod(os.path.join(etc, "shadow"), 0o640)
    os.chmod(os.path.join(etc, "gshadow"), 0o640)
    for name in ("login.defs", "default", "skel", "adduser.conf", "deluser.conf"):
        source = os.path.join("/etc", name)
        if os.path.isdir(source):
            shutil.copytree(source, os.path.join(etc, name), symlinks=True, dirs_exist_ok=True)
        elif os.path.isfile(source):
            shutil.copy2(source, os.path.join(etc, name))


def has_users(accounts: str) -> bool:
    """Whether an image's account files (folder ``accounts``) name users beside root and
    nobody (its build added some)."""
    try:
        with open(os.path.join(accounts, "passwd")) as source:
            ids = [line.split(":")[2] for line in source if line.count(":") >= 6]
    except (OSError, IndexError):
        return False
    return any(uid not in ("0", "65534") for uid in ids)


def users_problem() -> str:
    """ "" when a jail may have users beside root here, else why not."""
    if os.geteuid() != 0:
        return (
            "users beside root in a jail need the server to run as root (it maps 65,535 "
            "more ids into the jail's user namespace)"
        )
    return problem()


def user_namespace() -> int:
    """A new user namespace (an open file of it, for ``bwrap --userns``) where root is
    this process's user and ids 1..:data:`SUB_COUNT` are the host's :data:`SUB_BASE`
    plus as much. Needs root (see :func:`users_problem`).

    Raises:
        OSError: it could not be made.
    """
    holder = subprocess.Popen(
        ["unshare", "--user", "--", "sleep", "60"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        mine = os.stat("/proc/self/ns/user").st_ino
        for _ in range(2000):  # until it has left this namespace (a few ms)
            with contextlib.suppress(FileNotFoundError):
                if os.stat(f"/proc/{holder.pid}/ns/user").st_ino != mine:
                    break
            if holder.poll() is not None:
                said = holder.stderr.read() if holder.stderr is not None else b""
                raise OSError(f"unshare --user failed: {said.decode(errors='replace')[-200:]}")
            time.sleep(0.001)
        else:
            raise OSError("unshare --user did not make a user namespace in 2 s")
        for name, own in (("uid_map", os.geteuid()), ("gid_map", os.getegid())):
            with open(f"/proc/{holder.pid}/{name}", "w") as out:
                out.write(f"0 {own} 1\n1 {SUB_BASE + 1} {SUB_COUNT}\n")
        return os.open(f"/proc/{holder.pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        holder.kill()
        holder.wait()
        if holder.stderr is not None:
            holder.stderr.close()


def within(path: str, folder: str) -> bool:
    """Whether ``path`` is ``folder`` or lies inside it (paths as given, not resolved)."""
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _covered(path: str, jail: Jail) -> bool:
    """Whether ``path`` lies in a bind (then it is that bind's folder, not a tmpfs)."""
    return any(within(path, inside) for _, inside in (*jail.ro, *jail.rw))


def command(
    jail: Jail,
    argv: Sequence[str],
    private: str,
    seccomp_fd: int,
    group: cgroups.Group | None,
    info_fd: int | None = None,
    userns_fd: int | None = None,
) -> list[str]:
    """The whole command line that runs ``argv`` in ``jail``: a shell that joins the
    cgroups (before anything else runs), sets the rlimits (its own ``ulimit``: one exec
    less than ``prlimit``) and execs bwrap."""
    blocks = max(1, jail.file_bytes // 512)  # ulimit -f counts 512-byte blocks
    script = (
        'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; '
        f"ulimit -f {blocks} && ulimit -n {jail.open_files} && ulimit -c 0 || exit 125; "
        'exec "$@"'
    )
    procs = group.procs if group is not None else []
    return [
        "/bin/sh",
        "-c",
        script,
        "sh",
        *procs,
        "--",
        *bwrap_args(jail, private, seccomp_fd, info_fd, userns_fd),
        "--",
        *argv,
    ]


def interpreter_binds() -> tuple[tuple[str, str], ...]:
    """The running interpreter's installation, read-only at its own path: what an agent
    process inside runs on (stdlib only; see :func:`interpreter_hidden`)."""
    return ((sys.base_prefix, sys.base_prefix),)


def interpreter_hidden() -> tuple[str, ...]:
    """The packages installed into that interpreter (not the standard library): hidden,
    since a jail has no use for the host's packages."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    packages = os.path.join(sys.base_prefix, "lib", version, "site-packages")
    return (packages,) if os.path.isdir(packages) else ()


async def jail_pid(info: int, what: str) -> int:
    """The pid (here) of the first process of a jail, as bubblewrap tells it on its info
    pipe ``info`` (``--info-fd``; closed here): the process whose namespaces its network
    joins. ``what`` names the jail in the error.

    Raises:
        OSError: the jail ended before it said.
    """
    try:
        said = await asyncio.to_thread(_read_info, info)
    finally:
        os.close(info)
    pid = said.get("child-pid") if isinstance(said, dict) else None
    if not isinstance(pid, int):
        raise OSError(f"{what} ended before its network could be set up")
    return pid


def _read_info(fd: int) -> object:
    """The JSON object bubblewrap writes to pipe ``fd``, read until it is whole or the pipe
    closes (then None)."""
    data = b""
    while not data.rstrip().endswith(b"}"):
        chunk = os.read(fd, 4096)
        if not chunk:
            return None
        data += chunk
        if len(data) > 65536:
            return None
    try:
        return json.loads(data)
    except ValueError:
        return None


def private_folder(prefix: str) -> str:
    """A new folder of this process alone (mode 0700) for one jail's own files, named
    ``<prefix><pid>-...`` in the temporary folder so that :func:`sweep_folders` can tell
    whose it is."""
    return tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-")


def sweep_folders(prefix: str) -> None:
    """Remove the folders of :func:`private_folder` whose process is gone (it was killed
    before it could)."""
    for folder in glob.glob(os.path.join(tempfile.gettempdir(), prefix + "*")):
        owner = os.path.basename(folder)[len(prefix) :].split("-")[0]
        if owner.isdigit() and not os.path.exists(f"/proc/{owner}"):
            shutil.rmtree(folder, ignore_errors=True)
