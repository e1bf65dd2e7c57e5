"""Make, inspect and remove one local host.

A host is a network namespace joined to the cloud's bridge by a veth pair,
plus a process tree in its own mount, UTS, IPC and PID namespaces whose PID 1
is :mod:`gdl.providers.local.hostinit`.  Its resources are named from the
cloud's tag and the server name, so they can be found and removed from the
name alone, even when the host record is gone.

Everything here is plain mechanism: :mod:`gdl.providers.local.lifecycle`
makes and removes with it the hosts :mod:`gdl.providers.local.provider`
asks for.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from gdl import naming
from gdl.errors import ProviderError
from gdl.providers.local import confine, network

HOSTINIT = Path(__file__).resolve().parent / "hostinit.py"
CGROUP_ROOT = Path("/sys/fs/cgroup")
CPU_PERIOD_US = 100_000
NETNS_DIR = Path("/run/netns")


@dataclass(frozen=True)
class HostNames:
    """The kernel-side names of one host of one cloud."""

    netns: str
    veth: str  # the machine's end, on the bridge (<= 15 bytes)
    cgroup: str  # relative path under each cgroup hierarchy

    @classmethod
    def of(cls, cloud_tag: str, name: str) -> HostNames:
        return cls(
            netns=f"gdl-{cloud_tag}-{name}",
            veth=f"gv{naming.short_hash(cloud_tag, name, length=10)}",
            cgroup=f"gdl-{cloud_tag}/{name}",
        )

    @property
    def netns_path(self) -> Path:
        return NETNS_DIR / self.netns


def cloud_tag(bridge: str, state_dir: Path) -> str:
    """A short tag naming one local cloud in every kernel object it makes."""
    return naming.short_hash("local", bridge, str(state_dir), length=6)


# --- cgroups: memory and CPU caps where the kernel offers them ---------------------------


def cgroup_parents() -> dict[str, Path]:
    """The hierarchies that can cap a host: v2 unified, else v1 memory and cpu."""
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        return {"unified": CGROUP_ROOT}
    found = {}
    for controller in ("memory", "cpu"):
        path = CGROUP_ROOT / controller
        if (path / "cgroup.procs").exists():
            found[controller] = path
    return found


def _write_control(path: Path, value: str) -> None:
    path.write_text(value)


def make_cgroups(names: HostNames, memory_bytes: int, vcpus: int) -> list[str]:
    """Create the host's cgroups with its caps; returns their directories.

    A hierarchy that refuses (read-only, controller missing) is skipped: the
    host then runs uncapped, as the docs say.
    """
    made: list[str] = []
    quota = vcpus * CPU_PERIOD_US
    for kind, parent in cgroup_parents().items():
        directory = parent / names.cgroup
        try:
            if kind == "unified":
                top = parent / names.cgroup.split("/")[0]
                top.mkdir(exist_ok=True)
                with contextlib.suppress(OSError):
                    _write_control(parent / "cgroup.subtree_control", "+memory +cpu")
                with contextlib.suppress(OSError):
                    _write_control(top / "cgroup.subtree_control", "+memory +cpu")
                directory.mkdir(parents=True, exist_ok=True)
                with contextlib.suppress(OSError):
                    _write_control(directory / "memory.max", str(memory_bytes))
                with contextlib.suppress(OSError):
                    _write_control(directory / "cpu.max", f"{quota} {CPU_PERIOD_US}")
            elif kind == "memory":
                directory.mkdir(parents=True, exist_ok=True)
                _write_control(directory / "memory.limit_in_bytes", str(memory_bytes))
            else:
                directory.mkdir(parents=True, exist_ok=True)
                _write_control(directory / "cpu.cfs_period_us", str(CPU_PERIOD_US))
                _write_control(directory / "cpu.cfs_quota_us", str(quota))
        except OSError:
            continue
        made.append(str(directory))
    return made


def _kill_members(directory: Path) -> None:
    """SIGKILL what is still in a host's cgroup: a host whose PID 1 was never recorded."""
    with contextlib.suppress(OSError):
        for pid in (directory / "cgroup.procs").read_text().split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)


def remove_cgroups(names: HostNames, timeout: float = 5) -> None:
    """Remove the host's cgroups (and the cloud's parent when it empties)."""
    for parent in cgroup_parents().values():
        directory = parent / names.cgroup
        _kill_members(directory)
        deadline = time.monotonic() + timeout
        while directory.exists():
            try:
                directory.rmdir()
            except OSError:
                # Busy until the kernel has finished tearing the processes down.
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
        with contextlib.suppress(OSError):
            directory.parent.rmdir()


# --- the network namespace and its veth --------------------------------------------------


def _ip(*args: str, batch: str | None = None) -> None:
    result = subprocess.run(["ip", *args], input=batch, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        what = " ".join(args) if batch is None else f"{' '.join(args)}: {batch!r}"
        raise ProviderError(f"'ip {what}' failed: {result.stderr.strip()}")


def plumb(
    hosts: list[HostNames], bridge: str, macs: dict[str, str] | None = None
) -> dict[str, str]:
    """Make each host's network namespace and its veth pair, the machine's end on the bridge.

    Returns the errors by network namespace name; hosts not in it are
    plumbed.  One ``ip`` process does it all (parallel creation is bound by
    process start-up); the host's launcher addresses ``eth0`` from inside.
    ``macs`` gives some hosts' ``eth0`` a fixed MAC address (by netns name).
    """
    lines = []
    for names in hosts:
        mac = (macs or {}).get(names.netns)
        address = f" address {mac}" if mac else ""
        lines += [
            f"netns add {names.netns}",
            f"link add {names.veth} type veth peer name eth0{address} netns {names.netns}",
            f"link set {names.veth} master {bridge} up",
        ]
    result = subprocess.run(
        ["ip", "-force", "-batch", "-"],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        check=False,
    )
    errors: dict[str, str] = {}
    if result.returncode != 0:
        # ip names each failed line as "Command failed -:N"; report the host it was for.
        for match in re.finditer(r"Command failed -:(\d+)", result.stderr):
            line = int(match[1]) - 1
            errors.setdefault(hosts[line // 3].netns, f"'ip {lines[line]}' failed")
        if not errors:
            errors = {names.netns: result.stderr.strip() for names in hosts}
    return errors


def unplumb(names: HostNames) -> None:
    """Remove the veth and the network namespace; missing ones are fine."""
    if network.link_exists(names.veth):
        with contextlib.suppress(ProviderError):
            _ip("link", "del", names.veth)
    if names.netns_path.exists():
        _ip("netns", "del", names.netns)


# --- PID 1 ----------------------------------------------------------------------------------


def process_starttime(pid: int) -> int | None:
    """The start time (clock ticks since boot) of a live process, None if gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def is_alive(pid: int | None, starttime: int | None) -> bool:
    """True when ``pid`` is still the process that was started at ``starttime``."""
    return bool(pid) and starttime is not None and process_starttime(pid) == starttime


def boot(descriptions: list[dict], timeout: float = 60) -> list[tuple[int, int] | str]:
    """Start each host's PID 1; returns (pid, starttime) or the error, in order."""
    if not descriptions:
        return []
    python = descriptions[0].get("python") or sys.executable
    # The hosts' PID 1 and services keep nothing of the caller's environment (an
    # operator's OS_PASSWORD, say). PID 1 may be given, by name, what a hypervisor shows
    # its guests' init (cloud-init reads product_name there); its services never are.
    init_environment = dict(confine.SERVICE_ENVIRONMENT)
    for description in descriptions:
        init_environment.update(description.get("init_environment") or {})
    try:
        result = subprocess.run(
            [python, "-I", "-S", str(HOSTINIT)],
            env=init_environment,
            input=json.dumps(descriptions),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        answers = json.loads(result.stdout.strip().splitlines()[-1])
    except subprocess.TimeoutExpired:
        return [f"did not boot in {timeout:.0f} s"] * len(descriptions)
    except (IndexError, ValueError):
        error = (result.stderr.strip().splitlines() or ["the launcher said nothing"])[-1]
        return [f"did not boot: {error}"] * len(descriptions)
    return [
        (int(a["pid"]), int(a["starttime"])) if "pid" in a else f"did not boot: {a.get('error')}"
        for a in answers
    ]


def kill(pid: int | None, starttime: int | None, timeout: float = 10) -> None:
    """Kill a host's PID 1 (the kernel then kills all of the host) and wait for it."""
    if not is_alive(pid, starttime):
        return
    assert pid is not None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while is_alive(pid, starttime):
        if time.monotonic() > deadline:
            raise ProviderError(f"process {pid} survived SIGKILL for {timeout:.0f} s")
        time.sleep(0.02)


def remove_tree(path: Path) -> None:
    """Remove a host's state dir, unmounting anything the machine still has in it."""
    if not path.exists():
        return
    prefix = str(path.resolve()) + "/"
    with open("/proc/self/mountinfo") as handle:
        mounts = [line.split()[4] for line in handle]
    for mount_point in sorted((m for m in mounts if m.startswith(prefix)), reverse=True):
        subprocess.run(["umount", "-l", mount_point], capture_output=True, check=False)
    shutil.rmtree(path, ignore_errors=True)


def nsenter_argv(pid: int, command: list[str]) -> list[str]:
    """The command line that runs ``command`` inside the host whose PID 1 is ``pid``.

    It runs as the host's own processes do: with the host's capabilities only
    and the services' environment, none of the caller's.
    """
    kept = ",".join(f"+{name}" for name in confine.KEPT_CAPABILITIES)
    environment = [f"{key}={value}" for key, value in confine.SERVICE_ENVIRONMENT.items()]
    return [
        *("nsenter", "-t", str(pid), "-m", "-u", "-i", "-n", "-p", "-r", "-w", "--"),
        *("setpriv", f"--bounding-set=-all,{kept}", "--inh-caps=-all", "--ambient-caps=-all"),
        *("--", "env", "-i", *environment, *command),
    ]


def read_tail(pid: int, path: str, lines: int, most: int = 64 * 1024) -> list[str]:
    """The last ``lines`` lines of file ``path`` inside host ``pid`` (its last ``most`` bytes).

    Walked component by component from the host's root without following links: a
    link the host planted must not make the machine read one of its own files.
    """
    parts = [part for part in path.split("/") if part]
    directory = os.open(f"/proc/{pid}/root", os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in parts[:-1]:
            inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=directory)
            os.close(directory)
            directory = inner
        handle = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=directory)
    finally:
        os.close(directory)
    with os.fdopen(handle, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        file.seek(max(0, size - most))
        text = file.read(most).decode(errors="replace")
    return text.splitlines()[-lines:]
