"""What an environment leaves on the machine and the master after it is destroyed.

``leftovers()`` lists everything of one environment that a destroy must have
removed: the local cloud's hosts and host records, network namespaces, veths,
mounts, cgroups and the processes in them, minion keys and the master's cache
of those minions, pillar files, environment records and the lock file.  Each
is found by the environment's own names (server names, the cloud's tag), never
by a program's name: other local clouds on the machine run the same daemons.

``HostTrace`` remembers each host's PID 1 and its start time while the host
exists, so that a PID 1 that outlived its host is still told apart afterwards
from whatever process reuses the number.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from gdl import envstore, naming, pillar
from gdl.providers.local import LocalProvider, host, isolation
from gdl.providers.local.network import link_exists
from gdl_harness.local_cloud import LocalCloud

# Server indices looked for by name when no record is left to say which existed.
MAX_INDEX = 16


@dataclass
class HostTrace:
    """Kernel identities of an environment's hosts, noted while they ran."""

    pids: dict[int, int] = field(default_factory=dict)  # pid -> start time

    def note(self, provider: LocalProvider, app: str, env: str) -> None:
        for server in provider.list_servers(app, env):
            pid = int(server.extra.get("pid") or 0)
            starttime = host.process_starttime(pid) if pid else None
            if pid and starttime is not None:
                self.pids[pid] = starttime


def candidate_names(app: str, env: str, max_index: int = MAX_INDEX) -> list[str]:
    """Every server name the environment may have used."""
    names = [naming.server_name("lb", i, app, env) for i in range(2)]
    names += [naming.server_name("app", i, app, env) for i in range(max_index)]
    return names


def _belongs(name: str, app: str, env: str) -> bool:
    parsed = naming.parse_server_name(name)
    return parsed is not None and parsed.app == app and parsed.env == env


def _processes(cgroups: list[str], netns: set[str], trace: HostTrace | None) -> list[str]:
    """Processes in one of ``cgroups`` (relative paths) or ``netns`` (ns links), or in ``trace``.

    Only network namespaces that still exist can name a process: the kernel
    reuses a deleted namespace's inode number for the next one made, by
    anyone on the machine.
    """
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            membership = (entry / "cgroup").read_text()
            in_netns = os.readlink(entry / "ns" / "net")
        except OSError:
            continue  # gone meanwhile
        paths = [line.split(":", 2)[2] for line in membership.splitlines() if line.count(":") >= 2]
        reason = next(
            (c for c in cgroups for p in paths if p == "/" + c or p.startswith("/" + c + "/")),
            None,
        )
        if reason is None and in_netns in netns:
            reason = "a host's network namespace"
        noted = trace.pids.get(pid) if trace is not None else None
        if reason is None and noted is not None and host.process_starttime(pid) == noted:
            reason = "a host's PID 1"
        if reason is not None:
            with contextlib.suppress(OSError):
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:80]
                found.append(f"process {pid} ({command.strip()}) in {reason}")
    return found


def leftovers(cloud: LocalCloud, app: str, env: str, trace: HostTrace | None = None) -> list[str]:
    """Everything of environment (app, env) still on the machine or the master."""
    provider = cloud.provider()
    settings = cloud.settings
    master = cloud.master
    found: list[str] = []
    names = set(candidate_names(app, env))
    names |= {s.name for s in provider.list_servers(app, env)}
    if provider.hosts_dir.is_dir():
        names |= {p.name for p in provider.hosts_dir.iterdir() if _belongs(p.name, app, env)}

    found += [f"local host {s.name} ({s.state})" for s in provider.list_servers(app, env)]
    found += [
        f"host dir {provider.hosts_dir / n}"
        for n in sorted(names)
        if (provider.hosts_dir / n).exists()
    ]
    env_file = provider.envs_dir / f"{naming.env_id(app, env)}.json"
    if env_file.exists():
        found.append(f"local network record {env_file}")

    host_names = [host.HostNames.of(provider.tag, n) for n in sorted(names)]
    found += [f"network namespace {h.netns_path}" for h in host_names if h.netns_path.exists()]
    found += [f"veth {h.veth}" for h in host_names if link_exists(h.veth)]
    cgroup_dirs = [
        parent / h.cgroup for h in host_names for parent in host.cgroup_parents().values()
    ]
    found += [f"cgroup {d}" for d in cgroup_dirs if d.exists()]
    chain = isolation.env_chain(provider.tag, app, env)
    found += [f"ebtables chain {chain}" for c in isolation.chains(provider.tag) if c == chain]

    watched = [str(provider.hosts_dir / n) for n in names] + [str(h.netns_path) for h in host_names]
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            mount_point = line.split()[4]
            if any(mount_point == w or mount_point.startswith(w + "/") for w in watched):
                found.append(f"mount {mount_point}")

    live_netns = set()
    for names in host_names:
        with contextlib.suppress(OSError):
            live_netns.add(f"net:[{names.netns_path.stat().st_ino}]")
    found += _processes([h.cgroup for h in host_names], live_netns, trace)

    found += [f"minion key {m}" for m in sorted(master.keys.env_minions(app, env))]
    cache_dir = master.cache_dir
    for bank in ("minions", "grains", "pillar", "mine"):
        directory = cache_dir / bank
        if directory.is_dir():
            found += [
                f"master cache {entry}"
                for entry in sorted(directory.iterdir())
                if _belongs(entry.name.split(".")[0].split(":")[0], app, env)
            ]
    found += [
        f"pillar file {p}" for p in pillar.pillar_files(settings.pillar_dir, app, env) if p.exists()
    ]
    record = envstore.record_path(settings.state_dir, app, env)
    if record.exists():
        found.append(f"environment record {record}")
    lock_file = settings.lock_dir / f"{naming.lock_name(app, env)}.lock"
    if lock_file.exists():
        found.append(f"lock file {lock_file}")
    return found


def assert_nothing_left(
    cloud: LocalCloud, app: str, env: str, trace: HostTrace | None = None
) -> None:
    left = leftovers(cloud, app, env, trace)
    assert left == [], f"{naming.env_id(app, env)} left behind:\n" + "\n".join(left)
