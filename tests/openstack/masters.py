"""Salt masters outside the rig's cloud, as an operator's master would be."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openstack.connection
import pytest

from gdl_harness.salt_daemons import SaltMaster

EXTERNAL_SUBNET = "public-subnet"


@contextlib.contextmanager
def outside_master(
    tmp_path_factory: pytest.TempPathFactory,
    admin: openstack.connection.Connection,
    name: str,
    openstack_settings: dict[str, Any],
    before_start: Callable[[SaltMaster, Path], None] | None = None,
) -> Iterator[SaltMaster]:
    """A running master with gdl's OpenStack settings ``openstack_settings``, stopped after.

    It is bound to the external network's gateway address, which the rig puts on the
    machine: servers reach it through their router's SNAT (or, on a shared network,
    through its router's outside address). ``before_start(master, profiles_dir)`` may
    change its salt-cloud profiles before it starts.
    """
    gateway = admin.network.find_subnet(EXTERNAL_SUBNET).gateway_ip
    master = SaltMaster(tmp_path_factory.mktemp(name, numbered=True), gateway)
    master.gdl_settings = {
        "provider": "openstack",
        "openstack": {
            **openstack_settings,
            # This master's own address and ports, whatever the settings it starts from say.
            "master_address": gateway,
            "master_port": master.ret_port,
            "publish_port": master.publish_port,
        },
    }
    master.write_config()
    profiles = master.add_cloud("openstack", {"gdl-openstack": {"driver": "gdl_openstack"}})
    if before_start is not None:
        before_start(master, profiles)
    master.start()
    try:
        yield master
    finally:
        master.stop()
