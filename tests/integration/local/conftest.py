"""A local cloud per test module: its own bridge and subnet, and a master on the bridge.

Each module gets a bridge named ``gdlt<random>`` on a subnet that clashes with
no route of the machine, and a salt-master bound to the bridge's address with
``gdl: local:`` settings pointing at it and the repository's salt-cloud
provider and profiles in its config dir.  Whatever the tests leave, the
finalizer deletes every host of that cloud and removes the bridge.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from gdl.providers.local import LocalProvider, network
from gdl_harness.local_cloud import LocalCloud, make_bridge, remove_cloud, running_local_cloud

if os.geteuid() != 0:
    pytest.skip("local hosts need root", allow_module_level=True)


@pytest.fixture(scope="module")
def local_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCloud]:
    with running_local_cloud(tmp_path_factory.mktemp("lmaster", numbered=True)) as cloud:
        yield cloud


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
