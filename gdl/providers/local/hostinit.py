"""Boot local hosts: the program that becomes each host's PID 1.

Run as a script by :mod:`gdl.providers.local.host` with a JSON list of boot
descriptions on stdin; prints a JSON list of answers (PID and start time,
or the error), one per host.  It uses only the standard library, so any
Python 3.10+ can run it.

For each host, a launcher process joins the host's cgroups and network namespace, makes
new mount, UTS, IPC and PID namespaces, and forks.  The child is PID 1 of the
new PID namespace: it builds the host's filesystem view, pivots into it,
reports ``ready`` (or the error) through a pipe, and then starts the host's
services and reaps children for the rest of its life.  The launcher prints
the child's PID on the machine and exits, so the host outlives whoever made
it.

The filesystem view is an overlay: the machine's root filesystem is the
read-only lower layer and a per-host tmpfs holds the upper layer, so every
write a host makes stays in its own memory and disappears with it.  The
tmpfs is mounted only inside the host's mount namespace (on an empty
directory of the host's state dir), never inside the tree it overlays.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import socket
import struct
import sys
import time

try:
    from gdl.providers.local import confine
except ImportError:  # run as a script (python -I -S): the package is not on the path
    sys.path.append(os.path.dirname(os.path.abspath(__file__)))
    import confine  # type: ignore[no-redef]


CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MNT_DETACH = 0x2
MS_NOSUID, MS_NODEV, MS_NOEXEC = confine.MS_NOSUID, confine.MS_NODEV, confine.MS_NOEXEC
MS_RDONLY, MS_REMOUNT, MS_BIND = confine.MS_RDONLY, confine.MS_REMOUNT, confine.MS_BIND
MS_REC, MS_PRIVATE = confine.MS_REC, confine.MS_PRIVATE

SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "ppc64le": 203, "s390x": 217}

_libc = confine.libc
_check = confine.check
_mount = confine.mount


def _pivot_into(new_root: str) -> None:
    os.chdir(new_root)
    number = SYS_PIVOT_ROOT.get(os.uname().machine)
    if number is None:
        raise OSError(errno.ENOSYS, f"pivot_root: unsupported machine {os.uname().machine}")
    # pivot_root(".", ".") stacks the old root under the new one; detaching it
    # then leaves only the new root (pivot_root(2), "NOTES").
    _check(_libc.syscall(number, b".", b"."), "pivot_root")
    _check(_libc.umount2(b".", MNT_DETACH), "umount old root")
    os.chdir("/")


SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
SIOCSIFADDR = 0x8916
SIOCSIFNETMASK = 0x891C
IFF_UP = 0x1


def _ifreq_addr(name: str, address: str) -> bytes:
    sockaddr = struct.pack("=HH4s8x", socket.AF_INET, 0, socket.inet_aton(address))
    return struct.pack("16s16s8x", name.encode(), sockaddr)


def configure_interface(name: str, interface: str | None) -> None:
    """Give ``name`` its IPv4 address (``a.b.c.d/len``, if any) and bring it up.

    The ioctls ifconfig uses: no ``ip`` process per host.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        if interface:
            address, prefixlen = interface.split("/")
            mask = (0xFFFFFFFF << (32 - int(prefixlen))) & 0xFFFFFFFF
            netmask = socket.inet_ntoa(struct.pack("!I", mask))
            fcntl.ioctl(sock, SIOCSIFADDR, _ifreq_addr(name, address))
            fcntl.ioctl(sock, SIOCSIFNETMASK, _ifreq_addr(name, netmask))
        request = struct.pack("16sH22x", name.encode(), 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH22x", name.encode(), flags | IFF_UP))


def _copy_owner_mode(lower: str, upper: str) -> None:
    try:
        info = os.lstat(lower)
    except FileNotFoundError:
        return
    os.chown(upper, info.st_uid, info.st_gid)
    os.chmod(upper, info.st_mode & 0o7777)


def _make_upper_dir(upper_root: str, path: str, opaque: bool) -> None:
    """Create ``path`` in the upper layer, parents carrying the lower's owner and mode."""
    parts = [p for p in path.split("/") if p]
    current = ""
    for part in parts:
        current = f"{current}/{part}"
        target = upper_root + current
        if not os.path.isdir(target):
            os.mkdir(target)
            _copy_owner_mode(current, target)
    if opaque and parts:
        # An opaque upper directory hides the machine's contents: the host
        # starts with an empty one, as a new server would.
        os.setxattr(upper_root + current, "trusted.overlay.opaque", b"y")


def _write(root: str, path: str, text: str, mode: int = 0o644) -> None:
    target = root + path
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if os.path.lexists(target):
        os.unlink(target)  # a symlink in the lower layer must not be followed
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(target, mode)


def _symlink(root: str, path: str, target: str) -> None:
    link = root + path
    os.makedirs(os.path.dirname(link), exist_ok=True)
    if os.path.lexists(link):
        os.unlink(link)
    os.symlink(target, link)


def build_root(boot: dict) -> None:
    """Mount the host's filesystem view and pivot into it (runs as PID 1)."""
    stage = boot["stage_dir"]
    _mount("gdlhost", stage, "tmpfs", MS_NOSUID | MS_NODEV, f"size={boot['disk_bytes']},mode=755")
    for sub in ("upper", "work", "merged", "run", "tmp", "shm"):
        os.mkdir(f"{stage}/{sub}", 0o755)
    upper, merged = f"{stage}/upper", f"{stage}/merged"
    for path in boot["fresh_dirs"]:
        _make_upper_dir(upper, path, opaque=True)
    _mount(
        "overlay",
        merged,
        "overlay",
        0,
        f"lowerdir=/,upperdir={upper},workdir={stage}/work",
    )
    for sub, mode in (("run", 0o755), ("tmp", 0o1777)):
        os.chmod(f"{stage}/{sub}", mode)
        _mount(f"{stage}/{sub}", f"{merged}/{sub}", None, MS_BIND)
    for path in boot.get("machine_dirs", []):
        # Still the machine's tree here: pivot_root comes last.
        os.makedirs(merged + path, exist_ok=True)
        _mount(path, merged + path, None, MS_BIND | MS_REC)
        _mount(path, merged + path, None, MS_BIND | MS_REMOUNT | MS_RDONLY)
    os.makedirs(f"{merged}/run/lock", exist_ok=True)
    # Sticky and world-writable, like every /run/lock.
    os.chmod(f"{merged}/run/lock", 0o1777)  # noqa: S103  # nosec B103
    # Sticky and world-writable, like every /dev/shm.
    os.chmod(f"{stage}/shm", 0o1777)  # noqa: S103  # nosec B103
    # The host's own /dev (and /dev/shm, inside its root): none of the machine's devices
    # but the harmless ones.
    confine.build_dev(f"{merged}/dev", f"{stage}/shm")
    _mount("proc", f"{merged}/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    # A fresh sysfs shows this network namespace's interfaces, not the machine's.
    _mount("sysfs", f"{merged}/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    confine.protect_kernel_settings(merged)
    for path, spec in boot["files"].items():
        if "symlink" in spec:
            _symlink(merged, path, spec["symlink"])
        else:
            _write(merged, path, spec["text"], int(spec.get("mode", "644"), 8))
    _pivot_into(merged)


def _start(argv: list[str], log_path: str) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
            null = os.open("/dev/null", os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(log, 1)
            os.dup2(log, 2)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            # A fixed environment: nothing of whoever made the host reaches its services.
            os.execve(argv[0], argv, confine.SERVICE_ENVIRONMENT)  # noqa: S606 - a service argv from the boot description
        finally:
            os._exit(127)
    return pid


def run_init(services: list[dict]) -> None:
    """Start the host's services and reap every child, restarting services that end.

    A service marked ``once`` (a first-boot job) runs to its end and is not restarted.
    """
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        os.kill(-1, signal.SIGTERM)  # every process of this PID namespace

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    running: dict[int, dict] = {}
    for service in services:
        running[_start(service["argv"], service["log"])] = service
    while True:
        try:
            pid, _status = os.wait()
        except ChildProcessError:
            if stopping:
                os._exit(0)
            signal.pause()
            continue
        except InterruptedError:
            continue
        service = running.pop(pid, None)
        if service is not None and not stopping and not service.get("once"):
            time.sleep(1)  # a service that dies at once must not spin
            running[_start(service["argv"], service["log"])] = service


def _read_starttime(pid: int, proc: int) -> int:
    """The start time of ``pid``, read through ``proc``, a directory fd of the machine's /proc."""
    handle = os.open(f"{pid}/stat", os.O_RDONLY, dir_fd=proc)
    try:
        return int(os.read(handle, 4096).decode().rsplit(")", 1)[1].split()[19])
    finally:
        os.close(handle)


def launch(boot: dict, go: int | None = None) -> dict:
    """Make one host's namespaces and fork its PID 1; returns its pid or the error.

    Runs in a child of :func:`launch_all` (it changes this process's
    namespaces for good).  PID 1 starts the host's services once ``go``
    reads end-of-file: when the whole batch is up.
    """
    for cgroup in boot.get("cgroups", []):
        with open(os.path.join(cgroup, "cgroup.procs"), "w") as handle:
            handle.write(str(os.getpid()))
    netns = os.open(boot["netns"], os.O_RDONLY)
    _check(_libc.setns(netns, CLONE_NEWNET), "setns net")
    os.close(netns)
    configure_interface("lo", None)
    for name, interface in boot.get("interfaces", {}).items():
        configure_interface(name, interface)
    # Set while this process still sees the namespace's /proc/sys writable: the host's cannot be.
    confine.set_network_settings(boot.get("sysctls", confine.NETWORK_SETTINGS))
    _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWPID), "unshare")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    # The host's pivot_root moves this process's root too (it shares the mount
    # namespace), and with it "/proc" to the host's own procfs, where the host's
    # PID 1 is 1.  A directory fd opened now keeps the machine's /proc.
    proc = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(proc)  # the machine's /proc must not reach into the host
        os.close(read_end)
        try:
            os.setsid()
            name = boot["hostname"].encode()
            _check(_libc.sethostname(name, len(name)), "sethostname")
            build_root(boot)
            confine.drop_capabilities()
            os.write(write_end, b"ready\n")
        except BaseException as exc:  # everything goes back to the launcher
            os.write(write_end, f"error {exc}\n".encode())
            os._exit(1)
        os.close(write_end)
        if go is not None:
            os.read(go, 1)  # wait for the batch: booting hosts need the CPU more than minions
        null = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.closerange(3, 65536)  # other hosts' launcher pipes, inherited
        run_init(boot["services"])
        os._exit(0)
    os.close(write_end)
    try:
        starttime = _read_starttime(pid, proc)
    finally:
        os.close(proc)
    with os.fdopen(read_end) as handle:
        answer = handle.readline().strip() or "error the host's init ended during setup"
    if answer == "ready":
        return {"pid": pid, "starttime": starttime}
    os.waitpid(pid, 0)
    return {"error": answer.removeprefix("error ")}


def launch_all(boots: list[dict]) -> list[dict]:
    """Launch every host at once, each from its own forked launcher; answers in order.

    One interpreter start for the whole batch: under load, starting Python
    costs more than making a host.
    """
    children = []
    go_read, go_write = os.pipe()
    for boot in boots:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            os.close(go_write)
            try:
                answer = launch(boot, go_read)
            except BaseException as exc:
                answer = {"error": str(exc)}
            os.write(write_end, json.dumps(answer).encode() + b"\n")
            os._exit(0)
        os.close(write_end)
        children.append((pid, read_end))
    answers = []
    for pid, read_end in children:
        with os.fdopen(read_end) as handle:
            line = handle.readline()
        os.waitpid(pid, 0)
        try:
            answers.append(json.loads(line))
        except ValueError:
            answers.append({"error": "the launcher ended without an answer"})
    os.close(go_write)  # every host is up: let them start their services
    os.close(go_read)
    return answers


if __name__ == "__main__":
    print(json.dumps(launch_all(json.load(sys.stdin))), flush=True)
