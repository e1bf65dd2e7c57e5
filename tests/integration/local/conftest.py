"""A local cloud per test module: its own bridge and subnet, and a master on the bridge.

Each module gets a bridge named ``gdlt<random>`` on a subnet that clashes with
no route of the machine, and a salt-master bound to the bridge's address with
``gdl: local:`` settings pointing at it and the repository's salt-cloud
provider and profiles in its config dir.  Whatever the tests leave, the
finalizer deletes every host of that cloud and removes the bridge.
"""

from __future__ import annotations

import ipaddress
import os
import random
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gdl.config import Settings
from gdl.providers.local import LocalProvider, network
from tests.support.salt_daemons import REPO_ROOT, SaltMaster

if os.geteuid() != 0:
    pytest.skip("local hosts need root", allow_module_level=True)


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
            pki_dir=master.pki_dir,
            master_config=master.conf_file,
            local={"bridge": self.bridge, "cidr": self.cidr},
        )

    def provider(self) -> LocalProvider:
        return LocalProvider.from_settings(self.settings)


def make_bridge(prefix: int = 24) -> tuple[str, str]:
    bridge = f"gdlt{uuid.uuid4().hex[:8]}"
    for _attempt in range(5):
        cidr = network.choose_cidr(
            network.machine_networks(), seed=random.randrange(1 << 20), prefix=prefix
        )
        assert cidr is not None, "no free subnet on this machine"
        try:
            network.ensure_bridge(bridge, cidr)
            return bridge, str(cidr)
        except Exception:
            # Someone took that subnet between the choice and the bridge.
            network.remove_bridge(bridge)
    raise RuntimeError("could not make a bridge on a free subnet")


def remove_cloud(provider: LocalProvider) -> None:
    names = [s.name for s in provider.list_servers()]
    if provider.hosts_dir.is_dir():
        names += [p.name for p in provider.hosts_dir.iterdir()]
    provider.delete_servers(names)


@pytest.fixture(scope="module")
def local_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCloud]:
    bridge, cidr = make_bridge()
    master = None
    cloud = None
    try:
        gateway = str(network.gateway_address(ipaddress.ip_network(cidr)))
        master = SaltMaster(
            tmp_path_factory.mktemp("lmaster", numbered=True),
            gateway,
            gdl_settings={"provider": "local", "local": {"bridge": bridge, "cidr": cidr}},
        )
        for kind, source in (
            ("cloud.providers.d", REPO_ROOT / "cloud.providers.d" / "local.conf.example"),
            ("cloud.profiles.d", REPO_ROOT / "cloud.profiles.d" / "local.conf"),
        ):
            target = master.config_dir / kind
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, target / "local.conf")
        master.start()
        cloud = LocalCloud(bridge=bridge, cidr=cidr, gateway=gateway, master=master)
        yield cloud
    finally:
        if cloud is not None:
            remove_cloud(cloud.provider())
        if master is not None:
            master.stop()
        network.remove_bridge(bridge)


@pytest.fixture
def small_cloud(tmp_path: Path) -> Iterator[LocalProvider]:
    """A cloud on a /29 (5 addresses after the gateway), with no master."""
    bridge, cidr = make_bridge(prefix=29)
    provider = LocalProvider(
        state_dir=tmp_path / "local", bridge=bridge, cidr=cidr, master_port=1, publish_port=1
    )
    try:
        yield provider
    finally:
        remove_cloud(provider)
        network.remove_bridge(bridge)
