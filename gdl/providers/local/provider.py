"""LocalProvider: servers as namespace hosts on this machine, each with its own salt-minion.

State lives in two places that must agree: the system (a host's PID 1, its
network namespace, its veth) and the provider's state dir, whose records
(:mod:`gdl.providers.local.records`) reserve a host's address before anything
is made; ``delete_servers`` also removes kernel objects by their derived
names when the record is gone.  What a host boots with is
:mod:`gdl.providers.local.boot`; making and removing hosts is
:mod:`gdl.providers.local.lifecycle`; this class holds the Provider verbs.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import shutil
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from gdl.config import Settings
from gdl.errors import CapacityError, ConfigError, NameClash, ProviderError
from gdl.progress import named
from gdl.providers.base import (
    RUNNING,
    EnvNetwork,
    Progress,
    Provider,
    Server,
    ServerRequest,
    no_progress,
)
from gdl.providers.local import host, isolation, lifecycle, network
from gdl.providers.local.boot import MINION_CONSOLE_LOG, SIZES, HostSettings, Size
from gdl.providers.local.records import Records
from gdl.spec import EnvSpec

DEFAULT_BRIDGE = "gdl0"
MAX_PARALLEL = 16


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
        self.records = Records(self.state_dir, self.tag)

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
        return self.records.hosts_dir

    @property
    def envs_dir(self) -> Path:
        return self.records.envs_dir

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

    def host_settings(self) -> HostSettings:
        """What every host of this cloud is made with."""
        master_port, publish_port = self._ports()
        return HostSettings(
            tag=self.tag,
            bridge=self.bridge,
            cidr=self.cidr,
            venv=self.venv,
            master_port=master_port,
            publish_port=publish_port,
            hidden_dirs=self.hidden_dirs,
        )

    # --- servers ---------------------------------------------------------------------------

    def _server(self, record: dict) -> Server:
        return Server(
            name=record["name"],
            app=record["app"],
            env=record["env"],
            role=record["role"],
            state=self.records.state(record),
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
        missing = [t for t in ("ip", "nsenter", "setpriv", "ebtables") if not shutil.which(t)]
        if missing:
            raise ProviderError(
                f"{', '.join(missing)} missing", "apt-get install iproute2 util-linux ebtables"
            )
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
            network.free_addresses(self.cidr, self.records.used_addresses(), max(needed, 0))

    def find_env(self, app: str, env: str) -> EnvNetwork | None:
        record = self.records.env(app, env)
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
        record = self.records.reserve_env(app, env, self.cidr, self.bridge)
        return self._env_network(record)

    def teardown_env(self, app: str, env: str) -> None:
        """Release the environment's VIP and router id; servers are deleted separately."""
        self.records.release_env(app, env)

    def list_envs(self) -> list[tuple[str, str]]:
        pairs = {(s.app, s.env) for s in self.list_servers()}
        pairs |= {(r["app"], r["env"]) for r in self.records.envs().values()}
        return sorted(pairs)

    def list_servers(self, app: str | None = None, env: str | None = None) -> list[Server]:
        servers = [
            self._server(record)
            for record in self.records.hosts().values()
            if (app is None or record["app"] == app) and (env is None or record["env"] == env)
        ]
        return sorted(servers, key=lambda s: s.name)

    def get_server(self, name: str) -> Server | None:
        record = self.records.host(name)
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
            timeout = self.server_timeout
        sizes = {r.name: self.size(r.size) for r in requests}
        names = [r.name for r in requests]
        if len(set(names)) != len(names):
            raise NameClash("the same server name is asked for twice", "ask for each name once")
        for name in names:
            self.records.host_dir(name)
        if not network.link_exists(self.bridge):
            raise ConfigError(
                f"the local cloud's bridge {self.bridge} is missing",
                f"run: python -m gdl.providers.local ensure-network --bridge {self.bridge} "
                f"--cidr {self.cidr}",
            )
        settings = self.host_settings()
        self.records.reserve_hosts(requests, settings.cidr, self.bridge)
        progress(f"creating {len(requests)} local host(s): {named(names)}")

        failures = lifecycle.make_hosts(self.records, settings, requests, sizes, timeout)
        for request in requests:
            if request.name in failures:
                lifecycle.remove_host(self.records, request.name)
            else:
                progress(f"host {request.name} is up")
        if failures:
            isolation.sync(self.records)
        lifecycle.refresh_hosts_files(self.records, self.gateway)
        if failures:
            raise ProviderError(
                "local hosts failed: " + "; ".join(f"{n} ({e})" for n, e in failures.items())
            )
        made = [self.get_server(request.name) for request in requests]
        return [server for server in made if server is not None]

    def minion_ready(self, name: str) -> bool:
        """True once the host's minion has authenticated with the master.

        The minion writes the master's public key after its first successful
        authentication; the machine reads it through the host's PID 1 root.
        """
        record = self.records.host(name)
        if not record or self.records.state(record) != RUNNING:
            return False
        return Path(f"/proc/{record['pid']}/root/etc/salt/pki/minion/minion_master.pub").exists()

    def console_tail(self, name: str, lines: int = 20) -> list[str]:
        """The last lines the host's salt-minion printed (its console log)."""
        record = self.records.host(name)
        if not record or self.records.state(record) != RUNNING:
            return []
        try:
            return host.read_tail(int(record["pid"]), MINION_CONSOLE_LOG, lines)
        except OSError:
            return []  # not written yet, or the host went away meanwhile

    def wait_minions(self, names: Iterable[str], timeout: float = 60) -> list[str]:
        """Wait until each host's minion has joined; returns the names still not ready."""
        waiting = set(names)
        deadline = time.monotonic() + timeout
        while waiting and time.monotonic() < deadline:
            waiting = {name for name in waiting if not self.minion_ready(name)}
            if waiting:
                time.sleep(0.1)
        return sorted(waiting)

    def delete_servers(
        self, names: Iterable[str], timeout: float = 300, progress: Progress = no_progress
    ) -> list[str]:
        """Delete hosts in parallel; names that do not exist are skipped."""
        names = list(dict.fromkeys(names))
        if not names:
            return []
        with ThreadPoolExecutor(max_workers=min(len(names), MAX_PARALLEL)) as pool:
            found = list(pool.map(functools.partial(lifecycle.remove_host, self.records), names))
        deleted = [name for name, was_there in zip(names, found, strict=True) if was_there]
        isolation.sync(self.records)
        for name in deleted:
            progress(f"host {name} is deleted")
        lifecycle.refresh_hosts_files(self.records, self.gateway)
        return deleted

    def run(self, name: str, command: list[str]) -> list[str]:
        """The command line that runs ``command`` inside host ``name``."""
        record = self.records.host(name)
        if record is None:
            raise ProviderError(f"no local host {name}", "see: python -m gdl.providers.local list")
        if self.records.state(record) != RUNNING:
            raise ProviderError(f"local host {name} is not running", "delete and recreate it")
        return host.nsenter_argv(int(record["pid"]), command)
