"""What a build on OpenStack refuses before anything is made, on the rig.

Each layout, image or flavor a build cannot work with is refused, through the real
``salt-run gdl.build`` against a master with gdl's OpenStack settings, with one line that
says what is wrong and what to do and a non-zero exit; the master keeps no key, record or
lock, and the demo project keeps nothing of the environment asked for: no server, port,
floating IP, security group or server group. The odd networks, flavors and images these
tests need are made for the test and removed; the rig's fixtures come from
tests/openstack (see conftest.py here).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gdl.providers.openstack import marks_of
from gdl.spec import EnvSpec
from gdl_harness.salt_daemons import SaltMaster

pytestmark = pytest.mark.integration

SALT_NOISE = ("unclosed Runner", "unclosed MasterMinion")


def spec(env: str) -> EnvSpec:
    return EnvSpec(app="blog", env=env, servers=2, size="m1.small", provider="openstack")


@pytest.fixture(scope="module")
def os_master(tmp_path_factory: pytest.TempPathFactory, rig) -> Iterator[SaltMaster]:
    """A master whose builds go to the rig's demo project (settings set by each test)."""
    daemon = SaltMaster(tmp_path_factory.mktemp("gdsosbad", numbered=True))
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()


def footprint(*roots: Path) -> dict[str, str]:
    """Every file and directory under ``roots``: its path and a digest of its content."""
    seen: dict[str, str] = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            seen[str(path)] = (
                hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
            )
    return seen


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


@pytest.fixture
def refused(os_master: SaltMaster, openstack_section: dict, demo) -> Callable[..., str]:
    """``refused(env, size, **settings)``: the one line the build is refused with.

    Checks that it is all the operator sees, and that nothing was made.
    """

    def build(env: str, size: str = "m1.small", **settings: Any) -> str:
        os_master.gdl_settings = {
            "provider": "openstack",
            "openstack": {**openstack_section, **settings},
        }
        os_master.write_config()
        roots = (os_master.state_dir, os_master.pki_dir)
        before = footprint(*roots)
        result = os_master.run(
            "gdl.build", "app=blog", f"env={env}", "servers=2", f"size={size}", timeout=180
        )
        output = result.stdout + result.stderr
        assert "Traceback" not in output, output
        assert result.returncode != 0, output
        lines = [line for line in result.stdout.splitlines() if line.strip()]
        assert len(lines) == 1, output
        line = lines[0]
        assert ": " in line and len(line) < 300 and line.isprintable(), line
        stray = [
            text
            for text in result.stderr.splitlines()
            if text.strip() and not any(noise in text for noise in SALT_NOISE)
        ]
        assert stray == [], output
        # Nothing made: no key, record or lock on the master, nothing in the project.
        assert footprint(*roots) == before
        assert made_for(demo, env) == []
        return line

    return build


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


def test_a_network_without_port_security_is_refused(refused, scratch_network, env):
    network = scratch_network(port_security=False)
    line = refused(env, network=network.id, floating_ip=False)
    assert f"network {network.name!r} has port security disabled" in line


def test_a_subnet_with_no_router_is_refused_when_floating_ips_are_wanted(
    refused, make_provider, scratch_network, demo, env
):
    network = scratch_network()
    line = refused(env, network=network.name, external_network=None)
    assert f"subnet '{network.name}-0' has no router to an external network" in line
    assert "floating_ip: false" in line
    line = refused(env, network=network.name, external_network="public")
    assert f"subnet '{network.name}-0' has no router to external network 'public'" in line
    # The same network without floating IPs passes the check: the master reaches the
    # servers' fixed addresses.
    make_provider(network=network.name, floating_ip=False).check(spec(env))
    assert made_for(demo, env) == []


def test_a_network_with_two_subnets_needs_one_named(
    refused, make_provider, scratch_network, demo, env
):
    network = scratch_network(cidrs=("10.233.0.0/24", "10.233.1.0/24"))
    line = refused(env, network=network.id, floating_ip=False)
    assert "has 2 IPv4 subnets" in line and "gdl:openstack:subnet" in line
    subnet = f"{network.name}-1"
    make_provider(network=network.id, subnet=subnet, floating_ip=False).check(spec(env))
    assert made_for(demo, env) == []
    line = refused(env, subnet=subnet)
    assert f"subnet {subnet!r} is not a subnet of network 'private'" in line


def test_an_ipv6_master_address_is_refused(refused, env):
    assert "is IPv6" in refused(env, master_address="fd00:231::2")


@pytest.fixture
def diskless_flavor(admin) -> Iterator[str]:
    name = f"gdl-nodisk-{secrets.token_hex(3)}"
    flavor = admin.compute.create_flavor(name=name, vcpus=1, ram=512, disk=0)
    yield name
    admin.compute.delete_flavor(flavor, ignore_missing=True)


def test_a_flavor_with_no_disk_needs_boot_from_volume(refused, diskless_flavor, env):
    line = refused(env, size=diskless_flavor)
    assert f"flavor {diskless_flavor!r} has no disk (disk 0)" in line
    assert "boot_from_volume" in line


def test_an_image_needing_more_disk_than_the_flavor_is_refused(refused, demo, env):
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
        line = refused(env, size="m1.tiny", image=image.id)
        assert f"image {name!r} needs a 5 GiB disk and flavor 'm1.tiny' has 1 GiB" in line
    finally:
        demo.image.delete_image(image, ignore_missing=True)
