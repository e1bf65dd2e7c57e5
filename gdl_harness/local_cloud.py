"""A throwaway local cloud: its own bridge on a free subnet and a salt-master on it.

Used by the integration tests' fixtures and by the benchmarks, which need the
same thing outside pytest.  Whatever happens inside the ``with`` block, every
host of the cloud is deleted, the master stopped and the bridge removed.
"""

from __future__ import annotations

import contextlib
import ipaddress
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gdl.config import Settings
from gdl.providers.local import LocalProvider, network
from gdl_harness.salt_daemons import REPO_ROOT, SaltMaster, file_roots


@dataclass
class LocalCloud:
    bridge: str
    cidr: str
    gateway: str
    master: SaltMaster

    @property
    def settings(self) -> Settings:
        master = self.master
        return Settings(
            state_dir=master.state_dir,
            source_dir=REPO_ROOT,
            pki_dir=master.pki_dir,
            master_config=master.conf_file,
            local={"bridge": self.bridge, "cidr": self.cidr},
        )

    def provider(self) -> LocalProvider:
        return LocalProvider.from_settings(self.settings)


def make_bridge(prefix: int = 24, tag: str = "gdlt") -> tuple[str, str]:
    """A new bridge on a subnet no route of the machine uses: (name, cidr)."""
    bridge = f"{tag}{uuid.uuid4().hex[:8]}"
    for _attempt in range(5):
        cidr = network.choose_cidr(
            network.machine_networks(), seed=random.randrange(1 << 20), prefix=prefix
        )
        if cidr is None:
            raise RuntimeError("no free subnet on this machine")
        try:
            network.ensure_bridge(bridge, cidr)
            return bridge, str(cidr)
        except Exception:
            # Someone took that subnet between the choice and the bridge.
            network.remove_bridge(bridge)
    raise RuntimeError("could not make a bridge on a free subnet")


def remove_cloud(provider: LocalProvider) -> None:
    """Delete every host of the cloud, those whose records are torn included."""
    names = [s.name for s in provider.list_servers()]
    if provider.hosts_dir.is_dir():
        names += [p.name for p in provider.hosts_dir.iterdir()]
    provider.delete_servers(names)


@contextlib.contextmanager
def running_local_cloud(
    root: Path, tag: str = "gdlt", first_file_root: Path | None = None
) -> Iterator[LocalCloud]:
    """A bridge, and a master bound to its address with the repository's cloud config.

    ``first_file_root`` is searched before the repository's states: a file put
    there later (a changed ``gdl/parameters/defaults.yaml``) is what the
    minions get instead.
    """
    bridge, cidr = make_bridge(tag=tag)
    master = None
    cloud = None
    try:
        gateway = str(network.gateway_address(ipaddress.ip_network(cidr)))
        master = SaltMaster(
            root,
            gateway,
            gdl_settings={"provider": "local", "local": {"bridge": bridge, "cidr": cidr}},
        )
        if first_file_root is not None:
            roots = file_roots(master.state_dir)["base"]
            master.extra_config["file_roots"] = {"base": [str(first_file_root), *roots]}
            master.write_config()
        master.add_cloud("local")
        master.start()
        cloud = LocalCloud(bridge=bridge, cidr=cidr, gateway=gateway, master=master)
        yield cloud
    finally:
        if cloud is not None:
            remove_cloud(cloud.provider())
        if master is not None:
            master.stop()
        network.remove_bridge(bridge)
