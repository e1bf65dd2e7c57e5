"""What a build on OpenStack refuses before anything is made, on the rig.

Every setting, credential, layout, image, flavor and quota a build cannot work with is
refused, through the real ``salt-run gdl.build`` against a master with gdl's OpenStack
settings, with one line that says what is wrong and what to do and a non-zero exit; the
master keeps no key, record or lock, and the project keeps nothing of the environment
asked for: no server, port, floating IP, security group or server group. The odd
networks, flavors and images these tests need are made for the test and removed; the
quota refusals work in a project of their own with lowered quotas, reached through a
clouds.yaml of its own. ``refused`` and the rig's fixtures are in conftest.py here.

Not on the rig: a Neutron without the allowed-address-pairs extension.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gdl.spec import EnvSpec
from tests.reliability.openstack_refusal import made_for

pytestmark = pytest.mark.integration


def spec(env: str) -> EnvSpec:
    return EnvSpec(app="blog", env=env, servers=2, size="m1.small", provider="openstack")


# -- the settings, and what they name ----------------------------------------------------

# (id, settings over the rig's, a fragment of the one line)
SETTINGS: list[tuple[str, dict[str, Any], str]] = [
    ("image-not-set", {"image": None}, "gdl:openstack:image is not set: add 'image:'"),
    ("image-not-text", {"image": 5}, "gdl:openstack:image is not a string (5)"),
    ("floating-ip-not-a-flag", {"floating_ip": "yes"}, "floating_ip 'yes' is not true or false"),
    ("api-timeout-zero", {"api_timeout": 0}, "api_timeout 0 is not a number of seconds"),
    ("master-port-too-big", {"master_port": 70000}, "master_port 70000 is not a TCP port"),
    ("volume-size-zero", {"volume_size": 0}, "volume_size 0 is not a number of GiB"),
    ("flavor-not-a-mapping", {"flavor": ["m1.small"]}, "gdl:openstack:flavor is not a mapping"),
    ("packages-not-names", {"minion_packages": ["a;b"]}, "is not a list of package names"),
    ("index-not-a-url", {"pip_index_url": "ftp://mirror"}, "is not an http or https URL"),
    (
        "master-address-neither",
        {"master_address": "not an address"},
        "master_address 'not an address' is neither an IP address nor a DNS name",
    ),
    (
        "master-address-a-name-alone",
        {"master_address": "salt.example.org"},
        "master_address 'salt.example.org' is a name, and the security groups need",
    ),
    ("master-address-ipv6", {"master_address": "fd00:231::2"}, "fd00:231::2 is IPv6"),
    (
        "master-source-ipv6",
        {"master_source_cidr": "fd00:231::/64"},
        "master_source_cidr 'fd00:231::/64' is not an IPv4 address or network",
    ),
    ("no-cloud", {"cloud": None}, "no OpenStack cloud is configured"),
    ("cloud-not-there", {"cloud": "no-such-cloud"}, "cloud 'no-such-cloud' is not in clouds.yaml"),
    (
        "clouds-file-not-there",
        {"clouds_file": "/nonexistent/clouds.yaml"},
        "clouds_file '/nonexistent/clouds.yaml' is not a file the master can read",
    ),
]


@pytest.mark.parametrize(
    ("settings", "words"), [case[1:] for case in SETTINGS], ids=[case[0] for case in SETTINGS]
)
def test_a_setting_gdl_cannot_use_is_refused(refused, env, settings, words):
    assert words in refused(env, **settings)


# (id, settings over the rig's, size, a fragment of the one line)
NOT_THERE: list[tuple[str, dict[str, Any], str, str]] = [
    ("image", {"image": "no-such-image"}, "m1.small", "image 'no-such-image' does not exist"),
    ("size", {}, "m9.nope", "flavor 'm9.nope' (size=m9.nope) does not exist: use one of: "),
    (
        "size-mapped",
        {"flavor": {"m1.small": "no-such-flavor"}},
        "m1.small",
        "flavor 'no-such-flavor' (size=m1.small) does not exist",
    ),
    (
        "network",
        {"network": "no-such-net"},
        "m1.small",
        "network 'no-such-net' does not exist in this project",
    ),
    (
        "subnet",
        {"subnet": "no-such-subnet"},
        "m1.small",
        "subnet 'no-such-subnet' is not a subnet of network 'private'",
    ),
    (
        "external-network",
        {"external_network": "no-such-net"},
        "m1.small",
        "external network 'no-such-net' does not exist",
    ),
    ("key-pair", {"key_name": "no-such-key"}, "m1.small", "key pair 'no-such-key' does not exist"),
    (
        "master-security-group",
        {"master_security_group": "no-such-group"},
        "m1.small",
        "security group 'no-such-group' does not exist in this project",
    ),
]


@pytest.mark.parametrize(
    ("settings", "size", "words"),
    [case[1:] for case in NOT_THERE],
    ids=[case[0] for case in NOT_THERE],
)
def test_what_the_settings_name_must_be_there(refused, env, settings, size, words):
    assert words in refused(env, size=size, **settings)


# A password the rig's users do not have, which no output may show.
WRONG_PASSWORD = f"wrong-{secrets.token_hex(8)}"

# (id, the demo cloud's auth in clouds.yaml changed: key -> value, or None to drop it;
#  a fragment of the one line; {port}: a loopback port where nothing listens)
LOGINS: list[tuple[str, dict[str, Any], str]] = [
    (
        "wrong-password",
        {"password": WRONG_PASSWORD},
        "OpenStack rejected the credentials: check the user name, password",
    ),
    (
        "no-auth-url",
        {"auth_url": None},
        "the OpenStack credentials are incomplete (Auth plugin requires parameters which "
        "were not given: auth_url): complete clouds.yaml",
    ),
    (
        "unreachable",
        {"auth_url": "http://127.0.0.1:{port}/v3"},
        "cannot reach OpenStack at http://127.0.0.1:{port}/v3/auth/tokens (Connection refused) "
        "while logging in: check the auth_url",
    ),
]


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port held bound and not listening: a connection to it is refused."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield held.getsockname()[1]


@pytest.mark.parametrize(
    ("auth", "words"), [case[1:] for case in LOGINS], ids=[case[0] for case in LOGINS]
)
def test_a_cloud_gdl_cannot_log_in_to_is_refused(
    refused, rig, tmp_path, closed_port, env, auth, words
):
    clouds = yaml.safe_load(Path(rig["clouds_file"]).read_text())
    entry = clouds["clouds"]["gdl-rig-demo"]["auth"]
    for key, value in auth.items():
        if value is None:
            del entry[key]
        else:
            entry[key] = value.format(port=closed_port)
    changed = tmp_path / "clouds.yaml"
    changed.touch(mode=0o600)  # it holds the rig's passwords
    changed.write_text(yaml.safe_dump(clouds))
    line = refused(env, clouds_file=str(changed))
    assert words.format(port=closed_port) in line
    assert WRONG_PASSWORD not in line


def test_an_image_that_is_not_active_is_refused(refused, demo, env):
    # An image with no data uploaded stays queued.
    image = demo.image.create_image(
        name=f"gdl-queued-{secrets.token_hex(3)}", disk_format="raw", container_format="bare"
    )
    try:
        line = refused(env, image=image.name)
        assert f"image {image.name!r} is queued, not active" in line
    finally:
        demo.image.delete_image(image, ignore_missing=True)


# -- layouts -----------------------------------------------------------------------------


@pytest.fixture
def scratch_network(demo) -> Iterator[Callable[..., Any]]:
    """Networks of the demo project made for one test: ``make(port_security, cidrs, name)``."""
    made = []

    def make(
        port_security: bool = True,
        cidrs: tuple[str, ...] = ("10.233.0.0/24",),
        name: str | None = None,
    ) -> Any:
        network = demo.network.create_network(
            name=name or f"gdl-scratch-{secrets.token_hex(3)}",
            port_security_enabled=port_security,
        )
        made.append(network)
        for index, cidr in enumerate(cidrs):
            demo.network.create_subnet(
                network_id=network.id,
                ip_version=ipaddress.ip_network(cidr).version,
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


@pytest.fixture
def second_external_network(admin) -> Iterator[Any]:
    """An external network besides the rig's ``public``, made by the admin for one test."""
    network = admin.network.create_network(
        name=f"gdl-ext-{secrets.token_hex(3)}", is_router_external=True
    )
    try:
        admin.network.create_subnet(
            network_id=network.id, ip_version=4, cidr="10.234.0.0/24", is_dhcp_enabled=False
        )
        yield network
    finally:
        admin.network.delete_network(network, ignore_missing=True)


def test_a_subnet_with_routers_to_two_external_networks_needs_one_named(
    refused, make_provider, scratch_network, second_external_network, demo, env
):
    network = scratch_network()
    subnet = demo.network.find_subnet(f"{network.name}-0")
    public = demo.network.find_network("public")
    routers, port = [], None
    try:
        for external in (public, second_external_network):
            routers.append(
                demo.network.create_router(
                    name=f"{network.name}-{external.name}",
                    external_gateway_info={"network_id": external.id},
                )
            )
        # One router takes the subnet's gateway address, the other a port of its own.
        demo.network.add_interface_to_router(routers[0], subnet_id=subnet.id)
        port = demo.network.create_port(
            network_id=network.id, fixed_ips=[{"subnet_id": subnet.id, "ip_address": "10.233.0.2"}]
        )
        demo.network.add_interface_to_router(routers[1], port_id=port.id)
        line = refused(env, network=network.name, external_network=None)
        assert (
            f"subnet '{network.name}-0' has routers to external networks gdl cannot choose "
            "between: set gdl:openstack:external_network" in line
        )
        make_provider(network=network.name, external_network="public").check(spec(env))
        assert made_for(demo, env) == []
    finally:
        if routers:
            demo.network.remove_interface_from_router(routers[0], subnet_id=subnet.id)
        if port is not None and len(routers) > 1:
            demo.network.remove_interface_from_router(routers[1], port_id=port.id)
        for router in routers:
            demo.network.delete_router(router, ignore_missing=True)


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


def test_a_network_name_several_networks_share_is_refused(refused, scratch_network, env):
    name = f"gdl-twin-{secrets.token_hex(3)}"
    scratch_network(name=name)
    scratch_network(name=name, cidrs=("10.233.1.0/24",))
    line = refused(env, network=name, floating_ip=False)
    assert f"network name {name!r} is shared by several networks: give the network's id" in line


def test_a_network_needs_an_ipv4_subnet(refused, scratch_network, env):
    network = scratch_network(cidrs=("fd00:233::/64",))
    line = refused(env, network=network.id, floating_ip=False)
    assert f"network {network.name!r} has no IPv4 subnet" in line
    subnet = f"{network.name}-0"
    line = refused(env, network=network.id, subnet=subnet, floating_ip=False)
    assert f"subnet {subnet!r} is IPv6, which gdl does not support yet" in line


# -- flavors and images ------------------------------------------------------------------


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


def test_a_load_balancer_profile_with_no_disk_needs_boot_from_volume(
    refused, os_master, diskless_flavor, env
):
    # The VRRP pair is made from its salt-cloud profile, whose size is its own.
    profiles = os_master.add_cloud("openstack", {"gdl-openstack": {"driver": "gdl_openstack"}})
    written = profiles / "openstack.conf"
    try:
        chosen = yaml.safe_load(written.read_text())
        chosen["gdl-openstack-lb"]["size"] = diskless_flavor
        written.write_text(yaml.safe_dump(chosen))
        line = refused(env)
        assert f"flavor {diskless_flavor!r} has no disk (disk 0)" in line
        assert "boot_from_volume" in line
    finally:
        written.unlink()
        (profiles.parent / "cloud.providers.d" / "openstack.conf").unlink()


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
        line = refused(env, size="m1.tiny", image=image.id, boot_from_volume=True, volume_size=2)
        assert f"volume_size 2 GiB is below image {name!r}'s min_disk of 5 GiB" in line
    finally:
        demo.image.delete_image(image, ignore_missing=True)


# -- quotas ------------------------------------------------------------------------------

# What a build of 2 app servers and the pair, of m1.small (1 vCPU, 2048 MB), needs.
QUOTAS: list[tuple[str, str, int]] = [
    ("instances", "compute", 4),
    ("cores", "compute", 4),
    ("ram", "compute", 4 * 2048),
    ("server_groups", "compute", 2),
    ("ports", "network", 5),  # the servers' and the VIP's
    ("security_groups", "network", 2),
    ("floating_ips", "network", 1),  # the VIP's
]


def in_use(admin, service: str, project: str, quota: str) -> int:
    """How much of ``quota`` the project uses now."""
    if service == "compute":
        return (admin.compute.get_quota_set(project, usage=True).usage or {}).get(quota, 0)
    detail = getattr(admin.network.get_quota(project, details=True), quota)
    return detail["used"] + detail.get("reserved", 0)


def lower_quota(admin, service: str, project: str, quota: str, limit: int) -> None:
    if service == "compute":
        admin.set_compute_quotas(project, **{quota: limit})
    else:
        admin.set_network_quotas(project, **{quota: limit})


@pytest.fixture
def quota_refused(refused, quota_project, admin) -> Iterator[Callable[..., str]]:
    """``refused`` for a build in the quota project; its quotas are the defaults again after."""
    # Neutron gives a project its default security group when first asked: counted now.
    list(quota_project.conn.network.security_groups())
    try:
        yield lambda env, **args: refused(
            env, project=quota_project.conn, **quota_project.section, **args
        )
    finally:
        admin.delete_compute_quotas(quota_project.project.id)
        admin.delete_network_quotas(quota_project.project.id)


@pytest.mark.parametrize(("quota", "service", "need"), QUOTAS, ids=[q[0] for q in QUOTAS])
def test_a_build_beyond_a_quota_is_refused(
    quota_refused, quota_project, admin, env, quota, service, need
):
    project = quota_project.project.id
    limit = in_use(admin, service, project, quota) + need - 1
    lower_quota(admin, service, project, quota, limit)
    line = quota_refused(env)
    assert (
        f"the project's quota cannot hold blog-{env}: {quota} needs {need}, "
        f"{need - 1} free of {limit}; nothing was made: raise the quota" in line
    )


def test_a_build_beyond_the_security_group_rules_quota_is_refused(
    quota_refused, quota_project, admin, env
):
    # New groups' rules: those the build adds and the egress rules Neutron gives each group.
    project = quota_project.project.id
    limit = in_use(admin, "network", project, "security_group_rules") + 1
    lower_quota(admin, "network", project, "security_group_rules", limit)
    line = quota_refused(env)
    found = re.search(
        rf"security_group_rules needs (\d+), 1 free of {limit}; nothing was made", line
    )
    assert found and int(found[1]) > 1, line


def test_a_server_group_too_small_for_the_app_servers_is_refused(
    quota_refused, quota_project, admin, env
):
    lower_quota(admin, "compute", quota_project.project.id, "server_group_members", 3)
    line = quota_refused(env, servers=4)
    assert "server_group_members needs 4 in the app servers' group, 3 free of 3" in line
