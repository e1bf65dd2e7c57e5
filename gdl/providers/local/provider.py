"""LocalProvider: servers as namespace hosts on this machine, each with its own salt-minion.

State lives in two places that must agree: the system (a host's PID 1, its
network namespace, its veth) and the provider's state dir, which holds one
record per host (``hosts/<name>/host.json``) and one per environment
(``envs/<app>-<env>.json``, the VIP reservation and VRRP router id).  A
record is written before anything is made (it reserves the address) and
removed last, so a crash in between leaves something ``delete_servers``
can finish; ``delete_servers`` also removes kernel objects by their derived
names when the record is gone.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gdl import naming
from gdl.config import Settings
from gdl.errors import CapacityError, ConfigError, NameClash, ProviderError
from gdl.providers.base import (
    BUILDING,
    RUNNING,
    STOPPED,
    EnvNetwork,
    Progress,
    Provider,
    Server,
    ServerRequest,
    no_progress,
)
from gdl.providers.local import host, network
from gdl.spec import EnvSpec

DEFAULT_BRIDGE = "gdl0"
MAX_PARALLEL = 16
# Directories a host starts with empty instead of seeing the machine's: its
# own Salt identity, a new server's /root and /srv.  The state dir is added
# at run time (it holds other hosts' records and the runner's pillar).
FRESH_DIRS = ("/etc/salt", "/var/cache/salt", "/var/log/salt", "/var/lib/salt", "/root", "/srv")


@dataclass(frozen=True)
class Size:
    """An OpenStack classic flavor, as a local host's caps."""

    memory_mb: int
    vcpus: int
    disk_gb: int  # the cap of the host's private writable layer (tmpfs)


SIZES = {
    "m1.tiny": Size(512, 1, 1),
    "m1.small": Size(2048, 1, 20),
    "m1.medium": Size(4096, 2, 40),
    "m1.large": Size(8192, 4, 80),
    "m1.xlarge": Size(16384, 8, 160),
}


def _is_under(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def _outermost(paths: Iterable[str]) -> list[str]:
    """The paths not inside another of them (hiding a directory hides its subtree)."""
    unique = sorted({os.path.normpath(p) for p in paths})
    return [p for p in unique if not any(o != p and _is_under(p, o) for o in unique)]


def fresh_dirs(candidates: Iterable[str], needed: Iterable[str]) -> list[str]:
    """The directories a host starts with empty: the candidates, minus what must stay.

    /tmp and /run are fresh mounts anyway; a directory holding a path in
    ``needed`` (the minion's interpreter) stays visible.
    """
    needed = list(needed)
    return _outermost(
        d
        for d in candidates
        # Paths compared, not files made: /tmp and /run are never hidden.
        if not _is_under(d, "/tmp") and not _is_under(d, "/run") and d != "/"  # nosec B108
        if not any(_is_under(path, d) for path in needed)
    )


def machine_dirs(needed: Iterable[str]) -> list[str]:
    """Directories under /tmp or /run (fresh in every host) that hosts must still see.

    A venv or checkout there (a CI clone under /tmp, say) is bind-mounted into
    each host read-only, at the same path.
    """
    return _outermost(
        path
        for path in needed
        # Paths compared, not files made.
        if os.path.isdir(path) and (_is_under(path, "/tmp") or _is_under(path, "/run"))  # nosec B108
    )


class LocalProvider(Provider):
    """Namespace hosts joined by one Linux bridge."""

    name = "local"

    def __init__(
        self,
        state_dir: Path,
        bridge: str = DEFAULT_BRIDGE,
        cidr: str | None = None,
        venv: Path | None = None,
        master_port: int | None = None,
        publish_port: int | None = None,
        master_config: Path | None = None,
        hidden_dirs: Iterable[str] = (),
    ) -> None:
        network.check_interface_name(bridge)
        self.state_dir = Path(state_dir)
        self.bridge = bridge
        self._cidr = ipaddress.ip_network(cidr) if cidr else None
        self.venv = Path(venv) if venv else Path(sys.prefix)
        self._master_port = master_port
        self._publish_port = publish_port
        self.master_config = master_config
        self.hidden_dirs = tuple(hidden_dirs)
        self.tag = host.cloud_tag(bridge, self.state_dir)

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalProvider:
        """The provider as the master's ``gdl: local:`` settings describe it.

        Keys: ``bridge`` (default gdl0), ``cidr`` (default: the bridge's
        address), ``state_dir`` (default ``<gdl state_dir>/local``), ``venv``
        (where salt-minion is installed; default this Python's prefix),
        ``master_port`` and ``publish_port`` (default: the master config's).
        """
        local: dict[str, Any] = settings.local
        state_dir = Path(local.get("state_dir") or settings.state_dir / "local")
        return cls(
            state_dir=state_dir,
            bridge=str(local.get("bridge") or DEFAULT_BRIDGE),
            cidr=local.get("cidr"),
            venv=Path(local["venv"]) if local.get("venv") else None,
            master_port=int(local["master_port"]) if local.get("master_port") else None,
            publish_port=int(local["publish_port"]) if local.get("publish_port") else None,
            master_config=settings.master_config,
            # Hosts must not read what the master keeps (pillar, records, keys).
            hidden_dirs=[str(settings.state_dir), str(state_dir), str(settings.pki_dir)],
        )

    # --- paths and network facts ---------------------------------------------------------

    @property
    def hosts_dir(self) -> Path:
        return self.state_dir / "hosts"

    @property
    def envs_dir(self) -> Path:
        return self.state_dir / "envs"

    def _host_dir(self, name: str) -> Path:
        if naming.parse_server_name(name) is None and (not name or "/" in name or name[0] == "."):
            raise ProviderError(f"{name!r} is not a server name")
        return self.hosts_dir / name

    @property
    def cidr(self) -> ipaddress.IPv4Network:
        if self._cidr is None:
            found = network.bridge_cidr(self.bridge)
            if found is None:
                raise ConfigError(
                    f"the local cloud's bridge {self.bridge} is missing or has no address",
                    "run bootstrap, or: python -m gdl.providers.local ensure-network "
                    f"--bridge {self.bridge} --cidr $(python -m gdl.providers.local choose-cidr)",
                )
            self._cidr = found.network
        return self._cidr  # type: ignore[return-value]

    @property
    def gateway(self) -> str:
        """The bridge's address: the master and the machine on the cloud network."""
        return str(network.gateway_address(self.cidr))

    def _ports(self) -> tuple[int, int]:
        if self._master_port is None or self._publish_port is None:
            ret_port, publish_port = 4506, 4505
            if self.master_config and Path(self.master_config).exists():
                import salt.config

                opts = salt.config.master_config(str(self.master_config))
                ret_port, publish_port = int(opts["ret_port"]), int(opts["publish_port"])
            self._master_port = self._master_port or ret_port
            self._publish_port = self._publish_port or publish_port
        return self._master_port, self._publish_port

    # --- records ---------------------------------------------------------------------------

    def _records(self) -> dict[str, dict]:
        records = {}
        if self.hosts_dir.is_dir():
            for entry in self.hosts_dir.iterdir():
                record = network.read_json(entry / "host.json")
                if record is not None:
                    records[record["name"]] = record
        return records

    def _env_records(self) -> dict[str, dict]:
        records = {}
        if self.envs_dir.is_dir():
            for entry in self.envs_dir.glob("*.json"):
                record = network.read_json(entry)
                if record is not None:
                    records[naming.env_id(record["app"], record["env"])] = record
        return records

    def _used_addresses(self) -> list[str]:
        used = [r["address"] for r in self._records().values() if r.get("address")]
        used += [r["vip"] for r in self._env_records().values()]
        return used

    def _state(self, record: dict) -> str:
        names = host.HostNames.of(self.tag, record["name"])
        if record.get("pid") is None:
            # Half-made: still being made while the process making it lives; if that
            # process died (a killed build, a crashed master) nothing will finish it.
            if host.is_alive(record.get("creator"), record.get("creator_starttime")):
                return BUILDING
            return STOPPED
        if host.is_alive(record["pid"], record.get("starttime")) and names.netns_path.exists():
            return RUNNING
        return STOPPED

    def _server(self, record: dict) -> Server:
        return Server(
            name=record["name"],
            app=record["app"],
            env=record["env"],
            role=record["role"],
            state=self._state(record),
            address=record.get("address"),
            size=record["size"],
            provider_id=host.HostNames.of(self.tag, record["name"]).netns,
            extra={
                "image": "machine",
                "pid": str(record.get("pid") or ""),
                "minion_id": record["name"],
                "veth": record.get("veth", ""),
                "bridge": self.bridge,
            },
        )

    # --- Provider -----------------------------------------------------------------------------

    def images(self) -> dict[str, dict[str, object]]:
        """The one image: the master's own installed system, seen through an overlay."""
        return {
            "machine": {
                "name": "machine",
                "description": "the master's installed system; writes stay private to each host",
            }
        }

    def flavors(self) -> dict[str, dict[str, object]]:
        return {
            name: {"name": name, "ram": size.memory_mb, "vcpus": size.vcpus, "disk": size.disk_gb}
            for name, size in SIZES.items()
        }

    def zones(self) -> dict[str, dict[str, object]]:
        return {"local": {"name": "local", "description": "this machine"}}

    def sizes(self) -> list[str]:
        return list(SIZES)

    def size(self, size: str) -> Size:
        """The caps of ``size``; CapacityError for a size the local cloud does not have."""
        if size not in SIZES:
            raise CapacityError(
                f"size {size!r} is not a local size", f"use one of: {', '.join(SIZES)}"
            )
        return SIZES[size]

    def check(self, spec: EnvSpec) -> None:
        """Refuse a request the local cloud cannot hold, before anything is made."""
        self.size(spec.size)
        if os.geteuid() != 0:
            raise ProviderError("the local provider needs root", "run the salt-master as root")
        if not shutil.which("nsenter") or not shutil.which("ip"):
            raise ProviderError("nsenter or ip is missing", "apt-get install util-linux iproute2")
        if not (self.venv / "bin" / "salt-minion").exists():
            raise ConfigError(
                f"no salt-minion in {self.venv}", "set gdl: local: venv: to Salt's virtualenv"
            )
        if network.bridge_cidr(self.bridge) is None:
            raise ConfigError(
                f"the local cloud's bridge {self.bridge} is missing or has no address",
                f"run: python -m gdl.providers.local ensure-network --bridge {self.bridge} "
                f"--cidr {self._cidr or 'CIDR'}",
            )
        existing = len(self.list_servers(spec.app, spec.env))
        needed = spec.servers + 2 - existing  # app servers + the VRRP pair
        if self.find_env(spec.app, spec.env) is None:
            needed += 1  # the VIP
        with network.locked(self.state_dir):
            network.free_addresses(self.cidr, self._used_addresses(), max(needed, 0))

    def find_env(self, app: str, env: str) -> EnvNetwork | None:
        record = network.read_json(self.envs_dir / f"{naming.env_id(app, env)}.json")
        return self._env_network(record) if record else None

    def _env_network(self, record: dict) -> EnvNetwork:
        return EnvNetwork(
            vip=record["vip"],
            public_address=record["vip"],
            cidr=str(self.cidr),
            router_id=int(record["router_id"]),
            master_address=self.gateway,
        )

    def ensure_env(self, app: str, env: str) -> EnvNetwork:
        """Reserve the environment's VIP and VRRP router id (once)."""
        path = self.envs_dir / f"{naming.env_id(app, env)}.json"
        with network.locked(self.state_dir):
            record = network.read_json(path)
            if record is None:
                (vip,) = network.free_addresses(self.cidr, self._used_addresses(), 1)
                others = [r["router_id"] for r in self._env_records().values()]
                record = {
                    "app": app,
                    "env": env,
                    "vip": str(vip),
                    "router_id": network.next_router_id(
                        naming.preferred_router_id(app, env), others
                    ),
                    "bridge": self.bridge,
                }
                network.write_json(path, record)
        return self._env_network(record)

    def teardown_env(self, app: str, env: str) -> None:
        """Release the environment's VIP and router id; servers are deleted separately."""
        with network.locked(self.state_dir):
            (self.envs_dir / f"{naming.env_id(app, env)}.json").unlink(missing_ok=True)

    def list_envs(self) -> list[tuple[str, str]]:
        pairs = {(s.app, s.env) for s in self.list_servers()}
        pairs |= {(r["app"], r["env"]) for r in self._env_records().values()}
        return sorted(pairs)

    def list_servers(self, app: str | None = None, env: str | None = None) -> list[Server]:
        servers = [
            self._server(record)
            for record in self._records().values()
            if (app is None or record["app"] == app) and (env is None or record["env"] == env)
        ]
        return sorted(servers, key=lambda s: s.name)

    def get_server(self, name: str) -> Server | None:
        record = network.read_json(self._host_dir(name) / "host.json")
        return self._server(record) if record else None

    def create_servers(
        self,
        requests: Sequence[ServerRequest],
        timeout: float | None = None,
        progress: Progress = no_progress,
    ) -> list[Server]:
        """Make hosts in parallel; a bad size, a taken name or a full subnet makes none."""
        if not requests:
            return []
        if timeout is None:
            timeout = 600
        sizes = {r.name: self.size(r.size) for r in requests}
        names = [r.name for r in requests]
        if len(set(names)) != len(names):
            raise NameClash("the same server name is asked for twice", "ask for each name once")
        for name in names:
            self._host_dir(name)
        if not network.link_exists(self.bridge):
            raise ConfigError(
                f"the local cloud's bridge {self.bridge} is missing",
                f"run: python -m gdl.providers.local ensure-network --bridge {self.bridge} "
                f"--cidr {self.cidr}",
            )
        master_port, publish_port = self._ports()
        cidr = self.cidr
        with network.locked(self.state_dir):
            records = self._records()
            for request in requests:
                taken = records.get(request.name)
                if taken is not None:
                    owner = naming.env_id(taken["app"], taken["env"])
                    raise NameClash(
                        f"server {request.name} exists already (environment {owner})",
                        f"delete it first (salt-cloud -d {request.name}) or choose another name",
                    )
                if host.HostNames.of(self.tag, request.name).netns_path.exists():
                    raise NameClash(
                        f"a network namespace for server {request.name} exists already",
                        f"remove it with: python -m gdl.providers.local delete {request.name}",
                    )
            addresses = network.free_addresses(cidr, self._used_addresses(), len(requests))
            for request, address in zip(requests, addresses, strict=True):
                network.write_json(
                    self._host_dir(request.name) / "host.json",
                    {
                        "name": request.name,
                        "app": request.app,
                        "env": request.env,
                        "role": request.role,
                        "size": request.size,
                        "address": str(address),
                        "bridge": self.bridge,
                        "veth": host.HostNames.of(self.tag, request.name).veth,
                        "pid": None,
                        "starttime": None,
                        "creator": os.getpid(),
                        "creator_starttime": host.process_starttime(os.getpid()),
                        "created": time.time(),
                    },
                )
        progress(f"creating {len(requests)} local host(s): {', '.join(names)}")

        failures = self._make_hosts(requests, sizes, master_port, publish_port, timeout)
        for request in requests:
            if request.name in failures:
                self._remove_host(request.name)
            else:
                progress(f"host {request.name} is up")
        self.refresh_hosts_files()
        if failures:
            raise ProviderError(
                "local hosts failed: " + "; ".join(f"{n} ({e})" for n, e in failures.items())
            )
        made = [self.get_server(request.name) for request in requests]
        return [server for server in made if server is not None]

    def _hosts_file(self, records: Iterable[dict]) -> str:
        lines = [
            "127.0.0.1\tlocalhost",
            "::1\tlocalhost ip6-localhost ip6-loopback",
            f"{self.gateway}\tsalt gdl-master",
        ]
        lines += [f"{r['address']}\t{r['name']}" for r in sorted(records, key=lambda r: r["name"])]
        return "\n".join(lines) + "\n"

    def _boot_description(
        self,
        request: ServerRequest,
        size: Size,
        master_port: int,
        publish_port: int,
        cgroups: Sequence[str] = (),
    ) -> dict:
        names = host.HostNames.of(self.tag, request.name)
        minion_config = "\n".join(
            [
                f"id: {request.name}",
                f"master: {request.master_address or self.gateway}",
                f"master_port: {master_port}",
                f"publish_port: {publish_port}",
                "ipv6: false",
                # Join fast: the key is preseeded, so there is nothing to wait for.
                "acceptance_wait_time: 1",
                "acceptance_wait_time_max: 5",
                "random_reauth_delay: 0",
                "auth_timeout: 10",
                "recon_default: 200",
                "recon_max: 2000",
                "recon_randomize: false",
                # fqdn grains do reverse lookups; there is no resolver here.
                "enable_fqdns_grains: false",
                "grains:",
                *(
                    f"  {key}: {value}"
                    for key, value in naming.ownership(
                        request.app, request.env, request.role
                    ).items()
                ),
                "",
            ]
        )
        # The minion's interpreter must stay visible (a pyenv Python lives under /root).
        needed = [os.path.realpath(p) for p in (self.venv, self.venv / "bin" / "python3")]
        # An editable install of gdl (a checkout) is read through the venv too.
        needed.append(os.path.realpath(Path(__file__).resolve().parents[3]))
        hidden = fresh_dirs((*FRESH_DIRS, *self.hidden_dirs), needed)
        records = list(self._records().values())
        return {
            "hostname": request.name,
            "netns": str(names.netns_path),
            "stage_dir": str(self._host_dir(request.name) / "root"),
            "disk_bytes": size.disk_gb * 1024**3,
            "fresh_dirs": hidden,
            "machine_dirs": machine_dirs(needed),
            "cgroups": list(cgroups),
            "files": {
                "/etc/hostname": {"text": request.name + "\n"},
                "/etc/hosts": {"text": self._hosts_file(records)},
                "/etc/resolv.conf": {
                    # Nothing listens on port 53 here: lookups fail at once instead of hanging.
                    "text": "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n"
                },
                "/etc/salt/minion": {"text": minion_config},
                "/etc/salt/minion_id": {"text": request.name},
                "/etc/salt/pki/minion/minion.pem": {
                    "text": request.minion_private_key,
                    "mode": "400",
                },
                "/etc/salt/pki/minion/minion.pub": {"text": request.minion_public_key},
            },
            "services": [
                {
                    "argv": [str(self.venv / "bin" / "salt-minion"), "-c", "/etc/salt"],
                    "log": "/var/log/salt/minion-console.log",
                }
            ],
        }

    def _make_hosts(
        self,
        requests: Sequence[ServerRequest],
        sizes: dict[str, Size],
        master_port: int,
        publish_port: int,
        timeout: float,
    ) -> dict[str, str]:
        """Plumb and boot reserved hosts, all at once; returns the errors by name."""
        records = {
            r.name: network.read_json(self._host_dir(r.name) / "host.json") for r in requests
        }
        names = {r.name: host.HostNames.of(self.tag, r.name) for r in requests}
        plumbing = host.plumb([names[r.name] for r in requests], self.bridge)
        failures = {
            r.name: plumbing[names[r.name].netns]
            for r in requests
            if names[r.name].netns in plumbing
        }
        ready = [r for r in requests if r.name not in failures]
        descriptions = []
        for request in ready:
            (self._host_dir(request.name) / "root").mkdir(exist_ok=True)
            size = sizes[request.name]
            cgroups = host.make_cgroups(names[request.name], size.memory_mb * 1024**2, size.vcpus)
            description = self._boot_description(request, size, master_port, publish_port, cgroups)
            description["interfaces"] = {
                "eth0": f"{records[request.name]['address']}/{self.cidr.prefixlen}"
            }
            descriptions.append(description)
        answers = host.boot(descriptions, timeout=min(timeout, 120))
        for request, description, answer in zip(ready, descriptions, answers, strict=True):
            if isinstance(answer, str):
                failures[request.name] = answer
                continue
            record = records[request.name]
            record.update(pid=answer[0], starttime=answer[1], cgroups=description["cgroups"])
            network.write_json(self._host_dir(request.name) / "host.json", record)
        return failures

    def refresh_hosts_files(self) -> None:
        """Give every running host an /etc/hosts listing all hosts of the cloud."""
        records = list(self._records().values())
        text = self._hosts_file(r for r in records if r.get("address"))
        for record in records:
            if self._state(record) != RUNNING:
                continue
            target = Path(f"/proc/{record['pid']}/root/etc/hosts")
            try:
                tmp = target.with_name(".hosts.gdl")
                tmp.write_text(text)
                tmp.replace(target)
            except OSError:
                continue  # the host went away meanwhile

    def minion_ready(self, name: str) -> bool:
        """True once the host's minion has authenticated with the master.

        The minion writes the master's public key after its first successful
        authentication; the machine reads it through the host's PID 1 root.
        """
        record = network.read_json(self._host_dir(name) / "host.json")
        if not record or self._state(record) != RUNNING:
            return False
        return Path(f"/proc/{record['pid']}/root/etc/salt/pki/minion/minion_master.pub").exists()

    def wait_minions(self, names: Iterable[str], timeout: float = 60) -> list[str]:
        """Wait until each host's minion has joined; returns the names still not ready."""
        waiting = set(names)
        deadline = time.monotonic() + timeout
        while waiting and time.monotonic() < deadline:
            waiting = {name for name in waiting if not self.minion_ready(name)}
            if waiting:
                time.sleep(0.1)
        return sorted(waiting)

    def _remove_host(self, name: str) -> bool:
        """Remove everything of one host; False when nothing was there."""
        names = host.HostNames.of(self.tag, name)
        host_dir = self._host_dir(name)
        record = network.read_json(host_dir / "host.json")
        found = record is not None or names.netns_path.exists() or host_dir.exists()
        if record is not None:
            host.kill(record.get("pid"), record.get("starttime"))
        host.unplumb(names)
        host.remove_cgroups(names)
        # The record goes last: until then its address stays reserved.
        (host_dir / "host.json").unlink(missing_ok=True)
        host.remove_tree(host_dir)
        return found

    def delete_servers(
        self, names: Iterable[str], timeout: float = 300, progress: Progress = no_progress
    ) -> list[str]:
        """Delete hosts in parallel; names that do not exist are skipped."""
        names = list(dict.fromkeys(names))
        if not names:
            return []
        with ThreadPoolExecutor(max_workers=min(len(names), MAX_PARALLEL)) as pool:
            found = list(pool.map(self._remove_host, names))
        deleted = [name for name, was_there in zip(names, found, strict=True) if was_there]
        for name in deleted:
            progress(f"host {name} is deleted")
        self.refresh_hosts_files()
        return deleted

    def run(self, name: str, command: list[str]) -> list[str]:
        """The command line that runs ``command`` inside host ``name``."""
        record = network.read_json(self._host_dir(name) / "host.json")
        if record is None:
            raise ProviderError(f"no local host {name}", "see: python -m gdl.providers.local list")
        if self._state(record) != RUNNING:
            raise ProviderError(f"local host {name} is not running", "delete and recreate it")
        return host.nsenter_argv(int(record["pid"]), command)
