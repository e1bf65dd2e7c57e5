"""salt-cloud with gdl's OpenStack driver, against the rig, the way an operator runs it."""

from __future__ import annotations

import json

import pytest
import yaml

from gdl import naming
from gdl.providers.openstack import MARK_SERVER


@pytest.fixture
def cloud_master(salt_master_factory, openstack_section):
    """A master whose salt-cloud knows the gdl-openstack provider and profiles."""
    master = salt_master_factory(
        gdl_settings={"provider": "openstack", "openstack": openstack_section}
    )
    profiles = master.add_cloud("openstack", {"gdl-openstack": {"driver": "gdl_openstack"}})
    # A profile that also gives the server a floating IP of its own.
    (profiles / "test.conf").write_text(
        yaml.safe_dump({"gdl-test-fip": {"extends": "gdl-openstack-app", "floating_ip": True}})
    )
    return master


def cloud_json(master, *args):
    result = master.salt_cloud("--out=json", *args, timeout=600)
    assert result.returncode == 0, f"salt-cloud {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return json.loads(result.stdout)


def test_profile_makes_a_server_and_destroy_removes_it(cloud_master, provider, demo, env_name):
    app, env = "blog", env_name()
    name = naming.server_name("app", 0, app, env)
    try:
        made = cloud_json(cloud_master, "-p", "gdl-test-fip", name)
        node = made[name]
        assert node["state"] == "running"
        assert node["role"] == "app" and node["env"] == env
        assert node["public_ips"], node
        server = demo.compute.get_server(node["id"])
        assert server.status == "ACTIVE"
        assert naming.owned_by(server.metadata, app, env)
        # The key was preseeded and accepted on the master, never left pending.
        assert (cloud_master.pki_dir / "minions" / name).exists()
        (fip,) = demo.network.ips(tags=f"{MARK_SERVER}={name}")
        assert fip.floating_ip_address == node["public_ips"][0]

        listed = cloud_json(cloud_master, "-Q")
        assert name in json.dumps(listed)
        shown = cloud_json(cloud_master, "-y", "-a", "show_instance", name)
        assert name in json.dumps(shown)
        sizes = cloud_json(cloud_master, "--list-sizes", "gdl-openstack")
        assert "m1.small" in json.dumps(sizes)
        images = cloud_json(cloud_master, "--list-images", "gdl-openstack")
        assert "gdl-rig-image" in json.dumps(images)

        cloud_json(cloud_master, "-y", "-d", name)
        assert demo.compute.find_server(node["id"], ignore_missing=True) is None
        assert list(demo.network.ips(tags=f"{MARK_SERVER}={name}")) == []
        assert list(demo.network.ports(tags=f"{MARK_SERVER}={name}")) == []
        assert not (cloud_master.pki_dir / "minions" / name).exists()
    finally:
        provider.delete_servers([name])
        provider.teardown_env(app, env)
