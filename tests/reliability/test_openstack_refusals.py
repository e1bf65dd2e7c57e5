"""What the OpenStack provider refuses before anything is made, on the rig.

Each layout, image or flavor a build cannot work with is refused by ``check()`` with one
line that says what is wrong and what to do, and the demo project keeps nothing of the
environment asked for: no server, port, floating IP, security group or server group.
The odd networks, flavors and images these tests need are made for the test and removed;
the rig's fixtures come from tests/openstack (see conftest.py here).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from gdl.errors import GdlError
from gdl.providers.openstack import OpenStackProvider, marks_of
from gdl.spec import EnvSpec

pytestmark = pytest.mark.integration


def spec(env: str, size: str = "m1.small") -> EnvSpec:
    return EnvSpec(app="blog", env=env, servers=2, size=size, provider="openstack")


def made_for(conn, env: str) -> list[str]:
    """Whatever in the project carries environment ``env``'s name or marks."""

    def mine(resource) -> bool:
        marks = marks_of(getattr(resource, "tags", None) or [])
        metadata = getattr(resource, "metadata", None) or {}
        return f"-{env}" in (resource.name or "") or env in (
            marks.get("gdl_env"),
            metadata.get("gdl_env"),
        )

    kinds = {
        "server": conn.compute.servers(),
        "port": conn.network.ports(),
        "security group": conn.network.security_groups(),
        "server group": conn.compute.server_groups(),
        "floating ip": conn.network.ips(),
    }
    return [f"{kind} {r.name or r.id}" for kind, found in kinds.items() for r in found if mine(r)]


def refused(make: Callable[[], OpenStackProvider], env: str, size: str = "m1.small") -> str:
    """The one line ``check()`` refuses the request with."""
    with pytest.raises(GdlError) as caught:
        make().check(spec(env, size))
    line = str(caught.value)
    assert "\n" not in line and ": " in line and len(line) < 300, line
    assert "Traceback" not in line
    return line


@pytest.fixture
def env() -> str:
    return f"r{secrets.token_hex(3)}"


@pytest.fixture
def scratch_network(demo) -> Iterator[Callable[..., Any]]:
    """Networks of the demo project made for one test: ``make(port_security, cidrs)``."""
    made = []

    def make(port_security: bool = True, cidrs: tuple[str, ...] = ("10.233.0.0/24",)) -> Any:
        network = demo.network.create_network(
            name=f"gdl-scratch-{secrets.token_hex(3)}", port_security_enabled=port_security
        )
        made.append(network)
        for index, cidr in enumerate(cidrs):
            demo.network.create_subnet(
                network_id=network.id,
                ip_version=4,
                cidr=cidr,
                name=f"{network.name}-{index}",
                is_dhcp_enabled=False,  # nothing boots here: no DHCP server to start
            )
        return network

    yield make
    for network in made:
        demo.network.delete_network(network, ignore_missing=True)


def test_a_network_without_port_security_is_refused(make_provider, scratch_network, demo, env):
    network = scratch_network(port_security=False)
    line = refused(lambda: make_provider(network=network.id, floating_ip=False), env)
    assert f"network {network.name!r} has port security disabled" in line
    assert made_for(demo, env) == []


def test_a_subnet_with_no_router_is_refused_when_floating_ips_are_wanted(
    make_provider, scratch_network, demo, env
):
    network = scratch_network()
    line = refused(lambda: make_provider(network=network.name), env)
    assert f"subnet '{network.name}-0' has no router to an external network" in line
    assert "floating_ip: false" in line
    assert made_for(demo, env) == []
    # The same network without floating IPs: the master reaches the fixed addresses.
    make_provider(network=network.name, floating_ip=False).check(spec(env))
    assert made_for(demo, env) == []


def test_a_network_with_two_subnets_needs_one_named(make_provider, scratch_network, demo, env):
    network = scratch_network(cidrs=("10.233.0.0/24", "10.233.1.0/24"))
    line = refused(lambda: make_provider(network=network.id, floating_ip=False), env)
    assert "has 2 IPv4 subnets" in line and "gdl:openstack:subnet" in line
    make_provider(network=network.id, subnet=f"{network.name}-1", floating_ip=False).check(
        spec(env)
    )
    line = refused(lambda: make_provider(subnet=f"{network.name}-1"), env)
    assert f"subnet '{network.name}-1' is not a subnet of network 'private'" in line
    assert made_for(demo, env) == []


def test_an_ipv6_master_address_is_refused(make_provider, demo, env):
    line = refused(lambda: make_provider(master_address="fd00:231::2"), env)
    assert "is IPv6" in line
    assert made_for(demo, env) == []


@pytest.fixture
def diskless_flavor(admin) -> Iterator[str]:
    name = f"gdl-nodisk-{secrets.token_hex(3)}"
    flavor = admin.compute.create_flavor(name=name, vcpus=1, ram=512, disk=0)
    yield name
    admin.compute.delete_flavor(flavor, ignore_missing=True)


def test_a_flavor_with_no_disk_needs_boot_from_volume(make_provider, diskless_flavor, demo, env):
    line = refused(make_provider, env, size=diskless_flavor)
    assert f"flavor {diskless_flavor!r} has no disk (disk 0)" in line
    assert "boot_from_volume" in line
    assert made_for(demo, env) == []


def test_boot_from_volume_without_block_storage_is_refused(
    make_provider, diskless_flavor, demo, env
):
    # The rig has no Cinder: a volume to boot from cannot be made there.
    line = refused(lambda: make_provider(boot_from_volume=True), env, size=diskless_flavor)
    assert "this cloud has no block storage" in line
    assert made_for(demo, env) == []


def test_an_image_needing_more_disk_than_the_flavor_is_refused(make_provider, demo, env):
    name = f"gdl-bigdisk-{secrets.token_hex(3)}"
    image = demo.image.create_image(
        name=name,
        data=b"\0" * 512,
        disk_format="raw",
        container_format="bare",
        min_disk=5,
        wait=True,
    )
    try:
        line = refused(lambda: make_provider(image=image.id), env, size="m1.tiny")
        assert f"image {name!r} needs a 5 GiB disk and flavor 'm1.tiny' has 1 GiB" in line
        assert made_for(demo, env) == []
    finally:
        demo.image.delete_image(image, ignore_missing=True)
