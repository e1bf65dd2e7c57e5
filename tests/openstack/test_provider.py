"""The OpenStack provider against the rig: a real Nova/Neutron/Glance/Keystone.

These tests stop at what the cloud records: servers reach ACTIVE once Neutron's agent has
wired their ports; their minions knock at a master address where nobody answers
(tests/openstack/test_build.py runs the whole product).
"""

from __future__ import annotations

import base64
import ipaddress
import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml

from gdl import keys, naming, userdata
from gdl.errors import GdlError
from gdl.providers.base import RUNNING, ServerRequest
from gdl.providers.openstack import (
    MARK_SERVER,
    group_description,
    group_name,
    marks_of,
    tags_of,
    vip_description,
    vip_port_name,
)
from gdl.spec import EnvSpec


def spec(env: str, servers: int = 2, size: str = "m1.small", app: str = "blog") -> EnvSpec:
    return EnvSpec(app=app, env=env, servers=servers, size=size, provider="openstack")


def requests(app: str, env: str, master: str, apps: int = 2, lbs: int = 2) -> list:
    made = []
    for role, count in (("app", apps), ("lb", lbs)):
        for index in range(count):
            name = naming.server_name(role, index, app, env)
            pair = keys.generate(bits=1024)
            made.append(
                ServerRequest(
                    name=name,
                    app=app,
                    env=env,
                    role=role,
                    size="m1.tiny",
                    minion_public_key=pair.public_pem,
                    minion_private_key=pair.private_pem,
                    master_address=master,
                )
            )
    return made


def snapshot(conn, env: str) -> dict[str, set[str]]:
    """The ids of everything in the demo project that could be environment ``env``'s.

    Other tests build in the same project at the same time, so only what carries the
    environment's name or marks counts.
    """

    def mine(resource) -> bool:
        marks = marks_of(getattr(resource, "tags", None) or [])
        metadata = getattr(resource, "metadata", None) or {}
        named = f"-{env}" in (resource.name or "")
        return named or env in (marks.get("gdl_env"), metadata.get("gdl_env"))

    kinds = {
        "servers": conn.compute.servers(),
        "ports": conn.network.ports(),
        "security_groups": conn.network.security_groups(),
        "server_groups": conn.compute.server_groups(),
        "floating_ips": conn.network.ips(),
    }
    return {kind: {r.id for r in found if mine(r)} for kind, found in kinds.items()}


def env_leftovers(conn, app: str, env: str) -> dict[str, list[str]]:
    """Anything of (app, env) still in the cloud, found by its marks and names."""
    tags = ",".join(tags_of(naming.ownership(app, env)))
    names = {group_name(app, env, role) for role in naming.ROLES}
    found = {
        "servers": [
            s.name for s in conn.compute.servers() if naming.owned_by(s.metadata or {}, app, env)
        ],
        "ports": [p.name for p in conn.network.ports(tags=tags)],
        "floating_ips": [f.floating_ip_address for f in conn.network.ips(tags=tags)],
        "security_groups": [g.name for g in conn.network.security_groups(tags=tags)],
        "server_groups": [g.name for g in conn.compute.server_groups() if g.name in names],
    }
    return {kind: items for kind, items in found.items() if items}


@pytest.fixture
def cleanup(provider) -> Iterator[list[tuple[str, str]]]:
    """Environments a test made; torn down whatever the test's outcome."""
    envs: list[tuple[str, str]] = []
    yield envs
    for app, env in envs:
        provider.teardown_env(app, env)


# -- check(): what a good request passes (what it refuses: tests/reliability) ------------


def test_check_accepts_a_good_request(provider, env_name):
    provider.check(spec(env_name()))


def test_check_takes_the_network_and_subnet_by_id_and_finds_the_routers_gateway(
    make_provider, demo, env_name
):
    network = demo.network.find_network("private")
    subnet = demo.network.find_subnet("private-subnet")
    provider = make_provider(network=network.id, subnet=subnet.id, external_network=None)
    env = env_name()
    provider.check(spec(env))
    # No external_network set: floating IPs come from router1's gateway network.
    cloud = provider.cloud
    assert cloud.network().name == "private"
    assert cloud.external_network(cloud.network()).name == "public"
    assert not any(snapshot(demo, env).values())


def test_of_two_active_images_of_one_name_the_newest_is_taken(make_provider, demo):
    name = f"gdl-twin-{secrets.token_hex(3)}"
    made = []
    try:
        for _ in range(2):
            if made:
                time.sleep(1.1)  # Glance dates images to the second
            made.append(
                demo.image.create_image(
                    name=name,
                    data=b"\0" * 512,
                    disk_format="raw",
                    container_format="bare",
                    allow_duplicates=True,
                    wait=True,
                )
            )
        assert make_provider(image=name).cloud.image().id == made[-1].id
        assert make_provider(image=made[0].id).cloud.image().id == made[0].id
    finally:
        for image in made:
            demo.image.delete_image(image, ignore_missing=True)


# -- an environment's life ----------------------------------------------------------------


def test_two_environments_made_and_torn_down_apart(provider, admin, demo, env_name, cleanup):
    app, first, second = "blog", env_name(), env_name()
    cleanup.extend([(app, first), (app, second)])
    master = provider.cfg.master_address

    network = provider.ensure_env(app, first)
    assert provider.ensure_env(app, first) == network  # idempotent
    assert provider.find_env(app, first) == network
    assert ipaddress.ip_address(network.vip) in ipaddress.ip_network(network.cidr)
    assert 1 <= network.router_id <= 255
    assert network.public_address != network.vip  # the floating IP of the VIP port

    made = provider.create_servers(requests(app, first, master))
    assert sorted(s.name for s in made) == [
        f"app-0-blog-{first}",
        f"app-1-blog-{first}",
        f"lb-0-blog-{first}",
        f"lb-1-blog-{first}",
    ]
    assert {s.state for s in made} == {RUNNING}
    listed = provider.list_servers(app, first)
    assert [s.name for s in listed] == sorted(s.name for s in made)
    assert all(s.address and s.size == "m1.tiny" for s in listed)

    # Servers: ACTIVE, marked, in their role's anti-affinity group, with user data.
    groups = {g.name: g for g in demo.compute.server_groups()}

    def policy_and_members(role: str) -> tuple[str, set[str]]:
        group = groups[group_name(app, first, role)]
        members = {demo.compute.get_server(m).name for m in group.member_ids}
        return group.policy or (group.policies or [None])[0], members

    assert policy_and_members("app") == (
        "soft-anti-affinity",
        {s.name for s in made if s.role == "app"},
    )
    # The rig has one compute host: no valid host for the pair's hard anti-affinity, so
    # the LB that found none was made again in a soft group (the other stays outside).
    policy, members = policy_and_members("lb")
    assert policy == "soft-anti-affinity"
    assert members and members <= {s.name for s in made if s.role == "lb"}
    for server in made:
        full = demo.compute.get_server(server.provider_id)
        assert full.status == "ACTIVE"
        assert naming.owned_by(full.metadata, app, first)
        assert full.metadata[naming.MARK_ROLE] == server.role
        # Nova shows user data to admins only.
        text = base64.b64decode(admin.compute.get_server(server.provider_id).user_data).decode()
        document = yaml.safe_load(text.split("\n", 1)[1])
        written = {f["path"]: f for f in document["write_files"]}
        config = yaml.safe_load(written[userdata.MINION_CONFIG]["content"])
        assert (config["master"], config["id"]) == (master, server.name)
        assert written["/etc/salt/pki/minion/minion.pem"]["permissions"] == "0400"
        assert "PRIVATE KEY" in written["/etc/salt/pki/minion/minion.pem"]["content"]

    # Security groups and their rules.
    sgs = {g.name: g for g in demo.network.security_groups(tags=f"gdl_env={first}")}
    lb_sg, app_sg = sgs[group_name(app, first, "lb")], sgs[group_name(app, first, "app")]

    def rules(group):
        return {
            (r.protocol, r.port_range_min, r.port_range_max, r.remote_ip_prefix, r.remote_group_id)
            for r in demo.network.security_group_rules(
                security_group_id=group.id, direction="ingress"
            )
        }

    from_master = f"{master}/32"
    assert rules(lb_sg) == {
        ("tcp", 80, 80, "0.0.0.0/0", None),
        ("tcp", 443, 443, "0.0.0.0/0", None),
        ("tcp", 22, 22, from_master, None),
        ("tcp", 8404, 8404, from_master, None),
        ("112", None, None, None, lb_sg.id),
    }
    assert rules(app_sg) == {
        ("tcp", 80, 80, None, lb_sg.id),
        ("tcp", 22, 22, from_master, None),
    }

    # The VIP: its own port, in both LB ports' allowed address pairs, with the floating IP.
    vip_ports = list(demo.network.ports(tags=f"gdl_env={first},gdl_role=vip"))
    assert len(vip_ports) == 1
    vip_port = vip_ports[0]
    assert vip_port.fixed_ips[0]["ip_address"] == network.vip
    assert f"gdl_vrid={network.router_id}" in vip_port.tags
    for server in (s for s in made if s.role == "lb"):
        (port,) = demo.network.ports(tags=f"{MARK_SERVER}={server.name}")
        pairs = [ipaddress.ip_network(p["ip_address"]) for p in port.allowed_address_pairs]
        assert pairs == [ipaddress.ip_network(f"{network.vip}/32")]
        assert port.security_group_ids == [lb_sg.id]
    for server in (s for s in made if s.role == "app"):
        (port,) = demo.network.ports(tags=f"{MARK_SERVER}={server.name}")
        assert port.allowed_address_pairs == []
        assert port.security_group_ids == [app_sg.id]
    (fip,) = demo.network.ips(port_id=vip_port.id)
    assert fip.floating_ip_address == network.public_address

    # A second environment on the same network coexists, with another router id.
    other = provider.ensure_env(app, second)
    assert other.vip != network.vip
    assert other.router_id != network.router_id
    provider.create_servers(requests(app, second, master, apps=1, lbs=0))
    second_before = env_leftovers(demo, app, second)

    # Tearing down the first leaves nothing of it and the second untouched.
    deleted = provider.delete_servers([s.name for s in provider.list_servers(app, first)])
    assert len(deleted) == 4
    assert provider.delete_servers(deleted) == []  # idempotent
    provider.teardown_env(app, first)
    provider.teardown_env(app, first)  # idempotent
    assert env_leftovers(demo, app, first) == {}
    assert provider.find_env(app, first) is None
    assert env_leftovers(demo, app, second) == second_before
    assert provider.find_env(app, second) == other


def test_half_made_environment_is_destroyed_from_the_cloud_alone(
    make_provider, demo, env_name, cleanup
):
    app, env = "blog", env_name()
    cleanup.append((app, env))
    building = make_provider()
    building.ensure_env(app, env)
    (request,) = requests(app, env, building.cfg.master_address, apps=0, lbs=1)
    # The build died after making a server's port, before the server.
    building.servers.port_for(request, building.parts.ensure(app, env))
    assert env_leftovers(demo, app, env)

    destroying = make_provider()  # knows nothing of the first
    destroying.delete_servers([s.name for s in destroying.list_servers(app, env)])
    destroying.teardown_env(app, env)
    assert env_leftovers(demo, app, env) == {}


def test_a_server_that_fails_is_reported_with_its_fault_and_removed(
    provider, admin, demo, env_name, cleanup
):
    app, env = "blog", env_name()
    cleanup.append((app, env))
    # More disk than the fake compute host has (and no quota on disk): the scheduler
    # finds no valid host.
    flavor = admin.compute.find_flavor("gdl-test-huge") or admin.compute.create_flavor(
        name="gdl-test-huge", vcpus=1, ram=512, disk=1024 * 1024
    )
    assert flavor is not None
    provider.ensure_env(app, env)
    (request,) = requests(app, env, provider.cfg.master_address, apps=1, lbs=0)
    request = ServerRequest(**{**request.__dict__, "size": "gdl-test-huge"})
    with pytest.raises(GdlError) as caught:
        provider.create_servers([request])
    message = str(caught.value)
    assert "went to ERROR" in message and "No valid host" in message
    assert "\n" not in message
    leftovers = env_leftovers(demo, app, env)
    assert "servers" not in leftovers
    assert leftovers.get("ports", []) == [f"gdl-blog-{env}-vip"]


def test_concurrent_builders_share_one_set_of_parts(make_provider, demo, env_name, cleanup):
    app, env = "blog", env_name()
    cleanup.append((app, env))
    builders = [make_provider(), make_provider()]
    with ThreadPoolExecutor(max_workers=2) as pool:
        networks = list(pool.map(lambda p: p.ensure_env(app, env), builders))
    assert networks[0] == networks[1]
    leftovers = env_leftovers(demo, app, env)
    assert sorted(leftovers["security_groups"]) == [f"gdl-blog-{env}-app", f"gdl-blog-{env}-lb"]
    assert leftovers["ports"] == [f"gdl-blog-{env}-vip"]
    assert len(leftovers["floating_ips"]) == 1


def test_parts_left_untagged_are_adopted_and_torn_down(provider, demo, env_name, cleanup):
    app, env = "blog", env_name()
    cleanup.append((app, env))
    # A build died between making the group and the VIP port and tagging them.
    orphan = demo.network.create_security_group(
        name=group_name(app, env, "lb"), description=group_description(app, env, "lb")
    )
    network = provider.cloud.network()
    orphan_port = demo.network.create_port(
        name=vip_port_name(app, env), network_id=network.id, description=vip_description(app, env)
    )
    provider.ensure_env(app, env)
    groups = list(demo.network.security_groups(name=group_name(app, env, "lb")))
    assert [g.id for g in groups] == [orphan.id]  # adopted, not doubled
    assert "gdl_role=lb" in groups[0].tags
    ports = list(demo.network.ports(network_id=network.id, name=vip_port_name(app, env)))
    assert [p.id for p in ports] == [orphan_port.id]
    assert marks_of(ports[0].tags).get("gdl_vrid", "").isdigit(), ports[0].tags
    provider.teardown_env(app, env)
    assert env_leftovers(demo, app, env) == {}
    assert demo.network.find_security_group(orphan.id, ignore_missing=True) is None
    assert demo.network.find_port(orphan_port.id, ignore_missing=True) is None


def test_a_master_in_the_cloud_is_given_salts_ports_in_its_own_group(
    make_provider, demo, env_name, cleanup
):
    app, env = "blog", env_name()
    cleanup.append((app, env))
    master_group = demo.network.create_security_group(name=f"salt-master-{env}")
    try:
        # The operator's own rule, from anywhere, stays as it is.
        theirs = demo.network.create_security_group_rule(
            security_group_id=master_group.id,
            direction="ingress",
            ethertype="IPv4",
            protocol="tcp",
            port_range_min=22,
            port_range_max=22,
            remote_ip_prefix="0.0.0.0/0",
        )
        provider = make_provider(master_security_group=master_group.name)
        provider.ensure_env(app, env)
        provider.ensure_env(app, env)  # nothing doubled

        def salt_sources() -> list[str | None]:
            return sorted(
                r.remote_group_id
                for r in demo.network.security_group_rules(
                    security_group_id=master_group.id, direction="ingress"
                )
                if (r.protocol, r.port_range_min, r.port_range_max) == ("tcp", 4505, 4506)
            )

        groups = {g.name: g.id for g in demo.network.security_groups(tags=f"gdl_env={env}")}
        assert salt_sources() == sorted(groups.values())
        # The servers admit SSH and metrics from the master's group, Salt from no one.
        lb_rules = {
            (r.port_range_min, r.remote_ip_prefix, r.remote_group_id)
            for r in demo.network.security_group_rules(
                security_group_id=groups[group_name(app, env, "lb")], direction="ingress"
            )
            if r.protocol == "tcp"
        }
        assert (22, None, master_group.id) in lb_rules
        assert (8404, None, master_group.id) in lb_rules
        assert not [rule for rule in lb_rules if rule[0] == 4505]

        provider.teardown_env(app, env)
        assert env_leftovers(demo, app, env) == {}
        kept = list(
            demo.network.security_group_rules(
                security_group_id=master_group.id, direction="ingress"
            )
        )
        assert salt_sources() == []
        assert theirs.id in {r.id for r in kept}
    finally:
        demo.network.delete_security_group(master_group, ignore_missing=True)
