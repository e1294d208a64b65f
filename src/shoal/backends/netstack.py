"""Outbound network for an isolated process: ``slirp4netns`` (Debian's package of that
name), a user-space network stack, joined to the jail's own network namespace.

The jail always gets a network namespace of its own (only its loopback). Where it may
reach out, slirp4netns is attached to that namespace once bubblewrap has made it: it
gives the namespace an interface (``eth0``, 10.0.2.100/24, gateway 10.0.2.2, resolver
10.0.2.3, which the jail's ``/etc/resolv.conf`` names) and carries each connection out
through a socket of the host's. What it does not do matters as much:
``--disable-host-loopback`` refuses the one address that would lead to the host's
127.0.0.1, so Shoal's own server, its gateway and anything else bound to the host's
loopback stay out of reach (127.0.0.1 inside is the jail's own); it forwards no port
inward; and it runs itself in a mount namespace of its own with a seccomp filter
(``--enable-sandbox --enable-seccomp``), since it parses packets a jail wrote. It
stops when its exit pipe closes: when the jail is cleaned up, or when the server dies.
Without slirp4netns installed, a jail that asked for the network gets only its
loopback (said at start). Attaching costs a few milliseconds here (pasta, measured
beside it, took 50 ms).

An allowlist of addresses (a sandbox's ``cidr_allowlist``) is a rule set of nftables
(Debian's ``nftables``) loaded into the jail's network namespace before the stack joins it
(:func:`restrict`): what the jail sends goes out only to those networks, its resolver and
its own loopback; anything else is refused at once (a TCP connection with a reset, so
``ECONNREFUSED``; other packets with an ICMP error). Loading it takes the
host's root, which holds every namespace's network administration.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import json
import os
import shutil
import socket
import subprocess

#: What a jail with outbound network reads as its /etc/resolv.conf.
RESOLV_CONF = "nameserver 10.0.2.3\n"
#: The resolver slirp4netns answers at (an allowlist lets it through).
RESOLVER = "10.0.2.3"
#: Seconds slirp4netns has to configure the interface.
_READY_TIMEOUT = 10.0


@functools.cache
def slirp() -> str | None:
    """The slirp4netns executable, if installed."""
    return shutil.which("slirp4netns")


def problem() -> str:
    """ "" when jails can have outbound network here, else why not."""
    if slirp() is None:
        return "slirp4netns is not installed (Debian: apt-get install slirp4netns)"
    return ""


class Link:
    """One jail's network, joined to the outside while this object lives."""

    def __init__(self, process: asyncio.subprocess.Process, exit_write: int) -> None:
        self._process = process
        self._exit_write = exit_write

    async def close(self) -> None:
        """End it (closing its exit pipe) and wait for its process."""
        if self._exit_write >= 0:
            os.close(self._exit_write)
            self._exit_write = -1
        try:
            await asyncio.wait_for(self._process.wait(), 2.0)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
            await self._process.wait()

    def close_now(self) -> None:
        """End it without waiting (at exit)."""
        if self._exit_write >= 0:
            os.close(self._exit_write)
            self._exit_write = -1


async def attach(pid: int, api_socket: str | None = None) -> Link:
    """Join process ``pid``'s network namespace (through its user namespace, which owns
    it) to the outside; return once the interface is up. With ``api_socket`` (a path),
    the stack listens there for :func:`forward`.

    Raises:
        OSError: slirp4netns failed (what it said).
    """
    path = slirp()
    assert path is not None
    ready_read, ready_write = os.pipe()
    exit_read, exit_write = os.pipe()
    argv = [
        path,
        "--configure",
        "--mtu=65520",
        "--disable-host-loopback",
        "--enable-sandbox",
        "--enable-seccomp",
        f"--ready-fd={ready_write}",
        f"--exit-fd={exit_read}",
        f"--userns-path=/proc/{pid}/ns/user",
        *([f"--api-socket={api_socket}"] if api_socket else []),
        str(pid),
        "eth0",
    ]
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            pass_fds=(ready_write, exit_read),
            start_new_session=True,
        )
    finally:
        os.close(ready_write)
        os.close(exit_read)
    link = Link(process, exit_write)
    try:
        said = await asyncio.wait_for(asyncio.to_thread(os.read, ready_read, 1), _READY_TIMEOUT)
    except BaseException:
        await link.close()
        raise
    finally:
        os.close(ready_read)
    if said != b"1":
        await link.close()
        err = await process.stderr.read() if process.stderr is not None else b""
        raise OSError(f"its network could not be set up: {err.decode(errors='replace')[-300:]}")
    return link


def allowlist_problem() -> str:
    """ "" when an allowlist of addresses can be enforced here, else why not."""
    if shutil.which("nft") is None:
        return "cidr_allowlist needs nftables (Debian: apt-get install nftables)"
    if os.geteuid() != 0:
        return "cidr_allowlist needs the server to run as root (it loads firewall rules)"
    return ""


def networks(cidrs: list[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """``cidrs`` as networks (``10.0.0.0/8``, ``2001:db8::/32``, or a bare address).

    Raises:
        ValueError: one is not an address or network.
    """
    return [ipaddress.ip_network(cidr, strict=False) for cidr in cidrs]


def ruleset(allowed: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> str:
    """The nftables rule set that lets out only ``allowed``, the resolver and loopback."""
    v4 = [str(n) for n in allowed if n.version == 4]
    v6 = [str(n) for n in allowed if n.version == 6]
    lines = [
        "table inet shoal {",
        "  chain output {",
        "    type filter hook output priority 0; policy drop;",
        '    oifname "lo" accept',
        f"    ip daddr {RESOLVER} udp dport 53 accept",
        f"    ip daddr {RESOLVER} tcp dport 53 accept",
    ]
    if v4:
        lines.append(f"    ip daddr {{ {', '.join(v4)} }} accept")
    if v6:
        lines.append(f"    ip6 daddr {{ {', '.join(v6)} }} accept")
    # Refused, not dropped: a connection fails at once instead of timing out.
    lines.append("    meta l4proto tcp reject with tcp reset")
    lines.append("    reject with icmpx type admin-prohibited")
    return "\n".join([*lines, "  }", "}", ""])


async def restrict(pid: int, allowed: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> None:
    """Let process ``pid``'s network namespace send only to ``allowed`` (see above).

    Raises:
        OSError: the rules could not be loaded (what nft said).
    """
    nsenter = shutil.which("nsenter") or "nsenter"
    process = await asyncio.create_subprocess_exec(
        nsenter,
        f"--net=/proc/{pid}/ns/net",
        "nft",
        "-f",
        "-",
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, err = await process.communicate(ruleset(allowed).encode())
    if process.returncode != 0:
        raise OSError(
            f"its address allowlist could not be set: {err.decode(errors='replace')[-300:]}"
        )


async def forward(api_socket: str, guest_port: int) -> int:
    """Forward a free port of the host's loopback to ``guest_port`` inside the jail (TCP),
    through the stack's API socket; the host port.

    Raises:
        OSError: the stack refused, three times (a port taken between choosing and asking).
    """
    why = ""
    for _ in range(3):
        with socket.socket() as probe:  # a port free now: asked for at once
            probe.bind(("127.0.0.1", 0))
            host_port = int(probe.getsockname()[1])
        request = {
            "execute": "add_hostfwd",
            "arguments": {
                "proto": "tcp",
                "host_addr": "127.0.0.1",
                "host_port": host_port,
                "guest_port": guest_port,
            },
        }
        reader, writer = await asyncio.open_unix_connection(api_socket)
        try:
            writer.write(json.dumps(request).encode())
            await writer.drain()
            writer.write_eof()
            answer = json.loads((await asyncio.wait_for(reader.read(), _READY_TIMEOUT)) or b"{}")
        finally:
            writer.close()
        if isinstance(answer, dict) and "return" in answer:
            return host_port
        why = str(answer.get("error") if isinstance(answer, dict) else answer)
    raise OSError(f"port {guest_port} could not be forwarded: {why}")
