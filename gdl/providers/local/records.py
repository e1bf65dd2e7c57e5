"""The local provider's records: what its state dir says about hosts and environments.

The state dir holds one record per host (``hosts/<name>/host.json``) and one
per environment (``envs/<app>-<env>.json``, the VIP reservation and VRRP
router id).  A host record is written before anything is made (it reserves
the address) and removed last, so a crash in between leaves something
``delete_servers`` can finish.  Reservations are made under
:func:`gdl.providers.local.network.locked`, so concurrent processes (salt-cloud
``-P``, two builds) never share an address or a router id.
"""

from __future__ import annotations

import ipaddress
import os
import time
from collections.abc import Sequence
from pathlib import Path

from gdl import naming
from gdl.errors import NameClash, ProviderError
from gdl.providers.base import BUILDING, RUNNING, STOPPED, ServerRequest
from gdl.providers.local import host, network

HOST_RECORD = "host.json"


class Records:
    """The host and environment records of one local cloud."""

    def __init__(self, state_dir: Path, tag: str) -> None:
        self.state_dir = Path(state_dir)
        self.tag = tag

    @property
    def hosts_dir(self) -> Path:
        return self.state_dir / "hosts"

    @property
    def envs_dir(self) -> Path:
        return self.state_dir / "envs"

    def host_dir(self, name: str) -> Path:
        """Host ``name``'s directory; ProviderError for a name that is no server name."""
        if naming.parse_server_name(name) is None and (not name or "/" in name or name[0] == "."):
            raise ProviderError(f"{name!r} is not a server name")
        return self.hosts_dir / name

    def host(self, name: str) -> dict | None:
        """Host ``name``'s record, None when there is none."""
        return network.read_json(self.host_dir(name) / HOST_RECORD)

    def save_host(self, record: dict) -> None:
        network.write_json(self.host_dir(record["name"]) / HOST_RECORD, record)

    def forget_host(self, name: str) -> None:
        """Remove host ``name``'s record, which frees its address."""
        (self.host_dir(name) / HOST_RECORD).unlink(missing_ok=True)

    def hosts(self) -> dict[str, dict]:
        """Every host record, by name."""
        records = {}
        if self.hosts_dir.is_dir():
            for entry in self.hosts_dir.iterdir():
                record = network.read_json(entry / HOST_RECORD)
                if record is not None:
                    records[record["name"]] = record
        return records

    def reserve_hosts(
        self, requests: Sequence[ServerRequest], cidr: ipaddress.IPv4Network, bridge: str
    ) -> None:
        """Write the records of new hosts, each with a free address; all or none.

        NameClash when a name is taken (by a record or a namespace left
        behind), CapacityError when the subnet has too few addresses.
        """
        with network.locked(self.state_dir):
            records = self.hosts()
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
            addresses = network.free_addresses(cidr, self.used_addresses(), len(requests))
            for request, address in zip(requests, addresses, strict=True):
                self.save_host(
                    {
                        "name": request.name,
                        "app": request.app,
                        "env": request.env,
                        "role": request.role,
                        "size": request.size,
                        "address": str(address),
                        "bridge": bridge,
                        "veth": host.HostNames.of(self.tag, request.name).veth,
                        "pid": None,
                        "starttime": None,
                        "creator": os.getpid(),
                        "creator_starttime": host.process_starttime(os.getpid()),
                        "created": time.time(),
                    },
                )

    def env_path(self, app: str, env: str) -> Path:
        return self.envs_dir / f"{naming.env_id(app, env)}.json"

    def env(self, app: str, env: str) -> dict | None:
        """The environment's reservation, None when there is none."""
        return network.read_json(self.env_path(app, env))

    def envs(self) -> dict[str, dict]:
        """Every environment reservation, by environment id."""
        records = {}
        if self.envs_dir.is_dir():
            for entry in self.envs_dir.glob("*.json"):
                record = network.read_json(entry)
                if record is not None:
                    records[naming.env_id(record["app"], record["env"])] = record
        return records

    def reserve_env(self, app: str, env: str, cidr: ipaddress.IPv4Network, bridge: str) -> dict:
        """The environment's reservation of a VIP and a VRRP router id, made once."""
        path = self.env_path(app, env)
        with network.locked(self.state_dir):
            record = network.read_json(path)
            if record is None:
                (vip,) = network.free_addresses(cidr, self.used_addresses(), 1)
                others = [r["router_id"] for r in self.envs().values()]
                record = {
                    "app": app,
                    "env": env,
                    "vip": str(vip),
                    "router_id": network.next_router_id(
                        naming.preferred_router_id(app, env), others
                    ),
                    "bridge": bridge,
                }
                network.write_json(path, record)
        return record

    def release_env(self, app: str, env: str) -> None:
        """Remove the environment's reservation, which frees its VIP and router id."""
        with network.locked(self.state_dir):
            self.env_path(app, env).unlink(missing_ok=True)

    def used_addresses(self) -> list[str]:
        """The addresses hosts and VIPs hold."""
        used = [r["address"] for r in self.hosts().values() if r.get("address")]
        used += [r["vip"] for r in self.envs().values()]
        return used

    def state(self, record: dict) -> str:
        """The host's state: its record checked against the system."""
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
