"""The seccomp filter every isolated process runs under: a classic BPF program, built here.

It starts from Flatpak's blocklist and refuses, with ``EPERM`` unless said otherwise:
- making or entering namespaces (``unshare``, ``setns``, and ``clone`` with a
  ``CLONE_NEW*`` flag), and ``clone3`` with ``ENOSYS`` (its flags sit behind a pointer a
  filter cannot read; libc then falls back to ``clone``, which is checked);
- mounting: ``mount``, ``umount2``, ``pivot_root``, ``chroot`` and the new mount API
  (``open_tree``, ``move_mount``, ``fsopen``, ``fsconfig``, ``fsmount``, ``fspick``,
  ``mount_setattr``);
- looking into other processes: ``ptrace``, ``process_vm_readv/writev``, ``kcmp``,
  ``perf_event_open``;
- the kernel keyring (``add_key``, ``request_key``, ``keyctl``);
- sockets of families other than unix, inet, inet6 and netlink (``EAFNOSUPPORT``);
- ``ioctl`` ``TIOCSTI`` and ``TIOCLINUX`` (typing into a terminal it shares);
- what no sandboxed program needs and escapes have used: ``open_by_handle_at`` and
  ``name_to_handle_at``, ``bpf``, ``userfaultfd``, ``io_uring_*``, kernel modules,
  ``kexec_*``, ``reboot``, swap, ``acct``, ``quotactl``, ``syslog``, ``uselib``,
  ``lookup_dcookie``, ``vhangup``, and setting the clock or the host's names.

A process of another architecture than the host's is killed (the filter checks
``seccomp_data.arch`` first), and on x86_64 so are x32 system calls refused.
:func:`program` returns the filter as bytes, the ``struct sock_filter`` array that
``bwrap --seccomp FD`` reads.
"""

from __future__ import annotations

import errno
import functools
import platform
import struct

#: ``struct seccomp_data`` offsets: the system call's number, the architecture, and
#: the low 32 bits of argument ``n`` at ``16 + 8 * n`` (little-endian hosts).
_NR, _ARCH = 0, 4

_LD_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_JGE = 0x35  # BPF_JMP | BPF_JGE | BPF_K
_JSET = 0x45  # BPF_JMP | BPF_JSET | BPF_K
_RET = 0x06  # BPF_RET | BPF_K

_ALLOW = 0x7FFF0000
_KILL = 0x80000000  # SECCOMP_RET_KILL_PROCESS
_ERRNO = 0x00050000

#: Each architecture: its AUDIT_ARCH value and the numbers of the calls named below.
_ARCHES: dict[str, tuple[int, dict[str, int]]] = {
    "x86_64": (
        0xC000003E,
        {
            "unshare": 272, "setns": 308, "clone": 56, "clone3": 435,
            "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161,
            "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431,
            "fsmount": 432, "fspick": 433, "mount_setattr": 442,
            "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312,
            "perf_event_open": 298, "add_key": 248, "request_key": 249, "keyctl": 250,
            "socket": 41, "ioctl": 16,
            "open_by_handle_at": 304, "name_to_handle_at": 303, "bpf": 321,
            "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426,
            "io_uring_register": 427, "init_module": 175, "finit_module": 313,
            "delete_module": 176, "kexec_load": 246, "kexec_file_load": 320, "reboot": 169,
            "swapon": 167, "swapoff": 168, "acct": 163, "quotactl": 179, "syslog": 103,
            "uselib": 134, "lookup_dcookie": 212, "vhangup": 153, "settimeofday": 164,
            "sethostname": 170, "setdomainname": 171,
        },
    ),
    "aarch64": (
        0xC00000B7,
        {
            "unshare": 97, "setns": 268, "clone": 220, "clone3": 435,
            "mount": 40, "umount2": 39, "pivot_root": 41, "chroot": 51,
            "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431,
            "fsmount": 432, "fspick": 433, "mount_setattr": 442,
            "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271, "kcmp": 272,
            "perf_event_open": 241, "add_key": 217, "request_key": 218, "keyctl": 219,
            "socket": 198, "ioctl": 29,
            "open_by_handle_at": 265, "name_to_handle_at": 264, "bpf": 280,
            "userfaultfd": 282, "io_uring_setup": 425, "io_uring_enter": 426,
            "io_uring_register": 427, "init_module": 105, "finit_module": 273,
            "delete_module": 106, "kexec_load": 104, "kexec_file_load": 294, "reboot": 142,
            "swapon": 224, "swapoff": 225, "acct": 89, "quotactl": 60, "syslog": 116,
            "lookup_dcookie": 18, "vhangup": 58, "settimeofday": 170,
            "sethostname": 161, "setdomainname": 162,
        },
    ),
}  # fmt: skip

#: Refused outright (EPERM), by name.
_REFUSED = (
    "unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "open_tree",
    "move_mount", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr", "ptrace",
    "process_vm_readv", "process_vm_writev", "kcmp", "perf_event_open", "add_key",
    "request_key", "keyctl", "open_by_handle_at", "name_to_handle_at", "bpf", "userfaultfd",
    "io_uring_setup", "io_uring_enter", "io_uring_register", "init_module", "finit_module",
    "delete_module", "kexec_load", "kexec_file_load", "reboot", "swapon", "swapoff", "acct",
    "quotactl", "syslog", "uselib", "lookup_dcookie", "vhangup", "settimeofday",
    "sethostname", "setdomainname",
)  # fmt: skip

#: Socket families allowed: AF_UNIX, AF_INET, AF_INET6, AF_NETLINK.
_FAMILIES = (1, 2, 10, 16)
#: ioctl requests refused: TIOCSTI, TIOCLINUX.
_IOCTLS = (0x5412, 0x541C)
#: clone flags refused: CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET.
_NEW_NAMESPACE = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000
_NEW_NAMESPACE |= 0x20000000 | 0x40000000


class UnsupportedArchitecture(Exception):
    """No system call table for this machine's architecture."""


def _arg(n: int) -> int:
    return 16 + 8 * n


def _op(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


@functools.cache
def program(machine: str | None = None) -> bytes:
    """The filter for ``machine`` (default: this one's, ``platform.machine()``).

    Raises:
        UnsupportedArchitecture: not x86_64 or aarch64.
    """
    name = machine or platform.machine()
    if name not in _ARCHES:
        raise UnsupportedArchitecture(f"no seccomp filter for {name}: x86_64 and aarch64 only")
    arch, numbers = _ARCHES[name]
    ops = [_op(_LD_ABS, _ARCH), _op(_JEQ, arch, 1, 0), _op(_RET, _KILL), _op(_LD_ABS, _NR)]
    if name == "x86_64":  # x32 calls: number | 0x40000000
        ops += [_op(_JGE, 0x40000000, 0, 1), _op(_RET, _ERRNO | errno.EPERM)]
    for call in _REFUSED:
        if call in numbers:
            ops += [_op(_JEQ, numbers[call], 0, 1), _op(_RET, _ERRNO | errno.EPERM)]
    ops += [_op(_JEQ, numbers["clone3"], 0, 1), _op(_RET, _ERRNO | errno.ENOSYS)]
    # clone: refused with a namespace flag (its flags are argument 0 on both).
    ops += [
        _op(_JEQ, numbers["clone"], 0, 3),
        _op(_LD_ABS, _arg(0)),
        _op(_JSET, _NEW_NAMESPACE, 0, 1),
        _op(_RET, _ERRNO | errno.EPERM),
        _op(_LD_ABS, _NR),  # reloaded: the blocks below test the number again
    ]
    # socket: the family must be one of _FAMILIES.
    families = [_op(_JEQ, family, len(_FAMILIES) - i, 0) for i, family in enumerate(_FAMILIES)]
    ops += [
        _op(_JEQ, numbers["socket"], 0, 3 + len(families)),
        _op(_LD_ABS, _arg(0)),
        *families,
        _op(_RET, _ERRNO | errno.EAFNOSUPPORT),
        _op(_RET, _ALLOW),
    ]
    # ioctl: the request (argument 1; the kernel reads 32 bits of it) must not be one of _IOCTLS.
    block: list[bytes] = []
    for request in _IOCTLS:
        block += [_op(_JEQ, request, 0, 1), _op(_RET, _ERRNO | errno.EPERM)]
    ops += [_op(_JEQ, numbers["ioctl"], 0, 1 + len(block)), _op(_LD_ABS, _arg(1)), *block]
    ops.append(_op(_RET, _ALLOW))
    return b"".join(ops)
