"""What keeps root in a local host from being root on the machine.

Used by :mod:`gdl.providers.local.hostinit` (PID 1 of each host) while it
builds the host's view and before it starts the host's services.  Standard
library only, like hostinit.

A local host is no virtual machine: its processes run on the machine's kernel
as the machine's root.  What Linux gives without one is applied here:

- a ``/dev`` of its own: a small tmpfs with the harmless character devices
  bind-mounted from the machine's and a ``devpts`` instance of its own, so no
  disk, memory or console device of the machine is reachable;
- ``/proc/sys`` and ``/sys`` read-only (the kernel settings a host needs are
  set from outside, in its network namespace, before the host starts);
- a bounding capability set holding only what the roles' daemons use
  (:data:`KEPT_CAPABILITIES`), and none of it inheritable or ambient, so no
  process of the host can load modules, mount, change the clock, reach raw
  I/O, trace processes, make device nodes or open files by handle;
- services started with a fixed environment (:data:`SERVICE_ENVIRONMENT`),
  never the one of whoever made the host.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18

PR_CAPBSET_DROP = 24
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
LINUX_CAPABILITY_VERSION_3 = 0x20080522

libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

# The character devices every program may expect; all are harmless to share.
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
DEVICE_LINKS = {
    "ptmx": "pts/ptmx",
    "fd": "/proc/self/fd",
    "stdin": "/proc/self/fd/0",
    "stdout": "/proc/self/fd/1",
    "stderr": "/proc/self/fd/2",
}

# Linux's capability numbers (linux/capability.h).
CAPABILITIES = {
    "chown": 0,
    "dac_override": 1,
    "dac_read_search": 2,
    "fowner": 3,
    "fsetid": 4,
    "kill": 5,
    "setgid": 6,
    "setuid": 7,
    "setpcap": 8,
    "linux_immutable": 9,
    "net_bind_service": 10,
    "net_broadcast": 11,
    "net_admin": 12,
    "net_raw": 13,
    "ipc_lock": 14,
    "ipc_owner": 15,
    "sys_module": 16,
    "sys_rawio": 17,
    "sys_chroot": 18,
    "sys_ptrace": 19,
    "sys_pacct": 20,
    "sys_admin": 21,
    "sys_boot": 22,
    "sys_nice": 23,
    "sys_resource": 24,
    "sys_time": 25,
    "sys_tty_config": 26,
    "mknod": 27,
    "lease": 28,
    "audit_write": 29,
    "audit_control": 30,
    "setfcap": 31,
    "mac_override": 32,
    "mac_admin": 33,
    "syslog": 34,
    "wake_alarm": 35,
    "block_suspend": 36,
    "audit_read": 37,
    "perfmon": 38,
    "bpf": 39,
    "checkpoint_restore": 40,
}

# What the roles use, and why; everything else is dropped from the bounding set.
KEPT_CAPABILITIES = (
    # Salt's file, user and pip states; dpkg's and init scripts' file handling.
    # (Not dac_read_search: dac_override already reads any file, and it would
    # allow open_by_handle_at, which reaches files of the machine's filesystems
    # that the host's mounts do not show.)
    "chown",
    "dac_override",
    "fowner",
    "fsetid",
    # Init scripts and salt stop daemons; PID 1 ends the host.
    "kill",
    # Daemons drop to their users (nginx's and haproxy's workers, gunicorn, pip as nobody).
    "setgid",
    "setuid",
    "setpcap",
    # nginx and haproxy listen on ports 80 and 443.
    "net_bind_service",
    # keepalived adds and removes the VIP, sends VRRP and gratuitous ARP;
    # the LB role's VRRP filter is an iptables rule.
    "net_admin",
    "net_raw",
    "net_broadcast",
    # haproxy chroots its workers into /var/lib/haproxy.
    "sys_chroot",
    # haproxy raises its file limit; keepalived raises its priority and may lock its memory.
    "sys_resource",
    "sys_nice",
    "ipc_lock",
    # useradd and PAM write audit records where auditing is on.
    "audit_write",
)

# The whole environment of a host's services: nothing of the machine's.
SERVICE_ENVIRONMENT = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
}


# Kernel settings of a host's network namespace, set from outside before the host
# starts (its /proc/sys is read-only): keepalived keeps eth0's own address when the
# VIP goes (on a server it would set this itself).
NETWORK_SETTINGS = {
    "net.ipv4.conf.all.promote_secondaries": "1",
    "net.ipv4.conf.eth0.promote_secondaries": "1",
}


def check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    check(
        libc.mount(
            source.encode() if source else None,
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        f"mount {fstype or source} on {target}",
    )


def read_only(path: str, flags: int = MS_NOSUID | MS_NODEV | MS_NOEXEC) -> None:
    """Make ``path`` a read-only bind mount of itself."""
    mount(path, path, None, MS_BIND | MS_REC)
    mount(path, path, None, MS_BIND | MS_REMOUNT | MS_RDONLY | flags)


def build_dev(dev: str, shm: str) -> None:
    """Mount the host's own /dev on ``dev``; ``shm`` becomes its /dev/shm."""
    mount("gdldev", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "size=1m,mode=755")
    for name in DEVICES:
        node = f"{dev}/{name}"
        os.close(os.open(node, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        mount(f"/dev/{name}", node, None, MS_BIND)
    os.mkdir(f"{dev}/pts", 0o755)
    # A devpts of the host's own: the machine's terminals stay out of reach.
    mount(
        "devpts",
        f"{dev}/pts",
        "devpts",
        MS_NOSUID | MS_NOEXEC,
        "newinstance,ptmxmode=0666,mode=620",
    )
    os.mkdir(f"{dev}/shm")
    mount(shm, f"{dev}/shm", None, MS_BIND)
    for name, target in DEVICE_LINKS.items():
        os.symlink(target, f"{dev}/{name}")


def protect_kernel_settings(root: str) -> None:
    """/proc/sys, /proc/sysrq-trigger and /sys read-only under ``root``."""
    for path in ("/proc/sys", "/proc/sysrq-trigger", "/sys"):
        if os.path.exists(root + path):  # a kernel without magic SysRq has no trigger
            read_only(root + path)


def set_network_settings(settings: dict[str, str]) -> None:
    """Set sysctls of the current network namespace (``net.ipv4.x`` is ``/proc/sys/net/ipv4/x``)."""
    for key, value in settings.items():
        try:
            with open("/proc/sys/" + key.replace(".", "/"), "w") as handle:
                handle.write(value)
        except FileNotFoundError:
            continue  # an interface this host does not have


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def drop_capabilities(kept: tuple[str, ...] = KEPT_CAPABILITIES) -> None:
    """Keep only ``kept`` in this process's bounding, permitted and effective sets.

    The bounding set is what every program the host runs from now on can
    have at most, root's included; nothing is inheritable or ambient.
    """
    mask = 0
    for name in kept:
        mask |= 1 << CAPABILITIES[name]
    with open("/proc/sys/kernel/cap_last_cap") as handle:
        last = int(handle.read())
    for number in range(last + 1):
        if not mask & (1 << number):
            check(libc.prctl(PR_CAPBSET_DROP, number, 0, 0, 0), f"dropping capability {number}")
    check(libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "clearing ambient caps")
    header = _CapHeader(LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    current = (_CapData * 2)()
    check(libc.capget(ctypes.byref(header), current), "capget")
    for index in range(2):
        word = (mask >> (32 * index)) & 0xFFFFFFFF
        data[index].effective = current[index].effective & word
        data[index].permitted = current[index].permitted & word
        data[index].inheritable = 0
    check(libc.capset(ctypes.byref(header), data), "capset")
