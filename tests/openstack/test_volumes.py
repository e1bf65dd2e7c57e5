"""Boot from volume: a flavor with no disk builds when its servers boot from volumes.

The rig has Cinder (its volumes are sparse files: tests/openstack/rig/virt/gdl_volumes.py).
A build with ``boot_from_volume: true`` on a flavor with disk 0 (the app servers' size,
and the load balancers' through the master's salt-cloud profile) serves at its floating
IP; every server booted from a volume of the size asked, made from the image and
attached as its root, as Nova and Cinder both show; destroy leaves no volume, in Cinder
or on the machine. Without ``boot_from_volume`` the same flavor is refused before
anything is made (tests/reliability/test_openstack_refusals.py), and a cloud without
block storage refuses ``boot_from_volume`` (tests/unit/test_openstack_block_storage.py).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gdl_harness.salt_daemons import SaltMaster
from tests.openstack.masters import outside_master
from tests.openstack.test_build import APP, build, env_servers, floating_ip, leftovers
from tests.support.runs import run, served_by

pytestmark = [pytest.mark.integration, pytest.mark.long]

IMAGE = "gdl-rig-image"
VOLUME_GB = 2
# Cinder deletes a server's volumes after Nova has deleted the server.
VOLUMES_GONE_SECONDS = 120


@pytest.fixture(scope="module")
def diskless_flavor(admin) -> Iterator[str]:
    """A public flavor with no disk: its servers can only boot from a volume."""
    name = f"gdl-nodisk-{secrets.token_hex(3)}"
    flavor = admin.compute.create_flavor(name=name, vcpus=1, ram=512, disk=0)
    try:
        yield name
    finally:
        admin.compute.delete_flavor(flavor, ignore_missing=True)


@pytest.fixture(scope="module")
def volume_master(
    tmp_path_factory, rig, admin, openstack_section, diskless_flavor
) -> Iterator[SaltMaster]:
    """A master outside the cloud whose servers boot from volumes of VOLUME_GB GiB.

    Its salt-cloud profiles give the load balancers the flavor with no disk too.
    """
    settings = {
        **openstack_section,
        "minion_timeout": 600,
        "boot_from_volume": True,
        "volume_size": VOLUME_GB,
    }

    def diskless_profiles(_master: SaltMaster, profiles: Path) -> None:
        profile_file = profiles / "openstack.conf"
        profile = yaml.safe_load(profile_file.read_text())
        for each in profile.values():
            each["size"] = diskless_flavor
        profile_file.write_text(yaml.safe_dump(profile))

    with outside_master(
        tmp_path_factory, admin, "volmaster", settings, diskless_profiles
    ) as master:
        yield master


def volume_files(rig: dict[str, Any]) -> set[str]:
    """The rig backend's volume files (sparse files in the rig's state)."""
    directory = rig["state"] / "data" / "cinder" / "volumes"
    return {p.name for p in directory.glob("volume-*")}


def volumes_left(demo, ids: set[str]) -> set[str]:
    """Of the volumes ``ids``, those Cinder still lists, once their deletion had its time."""
    deadline = time.monotonic() + VOLUMES_GONE_SECONDS
    while True:
        left = {v.id for v in demo.block_storage.volumes()} & ids
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(1)


def test_a_flavor_with_no_disk_builds_from_volumes_and_destroy_leaves_none(
    volume_master, rig, admin, demo, env_name, diskless_flavor
):
    env = env_name()
    image = demo.image.find_image(IMAGE)
    started = time.monotonic()
    volumes: set[str] = set()
    try:
        code, result, output = build(volume_master, env, 1, f"size={diskless_flavor}")
        built_after = time.monotonic() - started
        assert code == 0, output
        url = f"http://{floating_ip(demo, env)}/"
        assert result["url"] == url
        servers = env_servers(demo, APP, env)
        assert len(servers) == 3  # an app server and two load balancers
        (app_server,) = [s.name for s in servers if s.name.startswith("app-")]
        assert served_by(url, 4) == [app_server] * 4
        for server in servers:
            # Nova: no image of its own, one volume, deleted with the server.
            assert server.flavor.name == diskless_flavor, server.name
            assert not (server.image and server.image.id), server.name
            (attached,) = server.attached_volumes
            assert attached["delete_on_termination"] is True, server.name
            # Cinder: that volume, of the size asked, made from the image, the root.
            volume = demo.block_storage.get_volume(attached["id"])
            assert volume.size == VOLUME_GB, server.name
            assert volume.is_bootable, server.name
            assert volume.status == "in-use", server.name
            assert volume.volume_image_metadata["image_id"] == image.id, server.name
            (attachment,) = volume.attachments
            assert attachment["server_id"] == server.id, server.name
            root_device = admin.compute.get_server(server.id).root_device_name
            assert attachment["device"] == root_device, server.name
            volumes.add(volume.id)
            # The rig: the instance host's root is that volume's file, sized as asked.
            record_path = rig["state"] / "data" / "hosts" / server.id / "host.json"
            record = json.loads(record_path.read_text())
            assert record["boot_volume"]["id"] == volume.id, server.name
            assert record["disk_gb"] == VOLUME_GB, server.name
        assert {f"volume-{v}" for v in volumes} <= volume_files(rig)
        print(f"boot from volume: build {built_after:.0f} s")
    finally:
        code, _data, output = run(volume_master, "gdl.destroy", f"app={APP}", f"env={env}")
    assert code == 0, output
    assert leftovers(demo, rig, APP, env) == []
    assert volumes_left(demo, volumes) == set()
    assert not {f"volume-{v}" for v in volumes} & volume_files(rig)
