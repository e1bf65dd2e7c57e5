"""With admin credentials, gdl sees and touches only its own project's environment.

An admin's Neutron lists every project's resources, and names, descriptions and tags are
not per project: another project's environment of the same app and env matches them all.
The rig has one project that builds (tests/openstack, acceptance 4 of issue 15 there);
here a stand-in admin connection (tests/support/fake_openstack.py) holds the other
project's twin environment on the same shared network, and every Neutron list gdl makes
is checked to carry the connection's project.
"""

import time

import pytest

from gdl import naming
from gdl.providers import openstack as provider
from gdl.providers.openstack.marks import (
    MARK_SERVER,
    MARK_VRID,
    ROLE_VIP,
    group_description,
    group_name,
    server_description,
    tags_of,
    vip_description,
    vip_port_name,
)
from tests.support.fake_openstack import LISTS, OTHER_PROJECT, PROJECT, FakeConnection

APP, ENV = "blog", "dev"
SETTINGS = {
    "image": "debian-12",
    "network": "private",
    "master_address": "10.0.0.2",
    "floating_ip": False,
}

# Neutron lists that need no project: a network's subnets (a shared network's belong to
# its owner), routers' interfaces, rules by their group's id, and the VRRP ids in use on
# the network (they must differ whoever owns the ports).
UNSCOPED = (
    ("subnets", {"network_id"}),
    ("ports", {"device_owner", "fixed_ips"}),
    ("security_group_rules", {"security_group_id", "direction"}),
    ("ports", {"network_id", "tags"}),
)


def other_projects_twin(conn: FakeConnection, network_id: str) -> set[str]:
    """The same environment made by another project on the shared network; its ids."""
    neutron = conn.network
    marks = naming.ownership(APP, ENV)
    vip_marks = {**marks, naming.MARK_ROLE: ROLE_VIP}
    server = f"app-0-{APP}-{ENV}"
    server_marks = {**naming.ownership(APP, ENV, "app"), MARK_SERVER: server}
    preferred = naming.preferred_router_id(APP, ENV)
    made = [
        neutron.add(
            "security_group",
            name=group_name(APP, ENV, role),
            description=group_description(APP, ENV, role),
            tags=tags_of(naming.ownership(APP, ENV, role)),
            project_id=OTHER_PROJECT,
        )
        for role in naming.ROLES
    ]
    vip = neutron.add(
        "port",
        name=vip_port_name(APP, ENV),
        description=vip_description(APP, ENV),
        network_id=network_id,
        fixed_ips=[{"ip_address": "10.0.0.50"}],
        tags=tags_of({**vip_marks, MARK_VRID: str(preferred)}),
        project_id=OTHER_PROJECT,
    )
    made.append(vip)
    made.append(
        neutron.add(
            "ip",
            port_id=vip.id,
            description=vip_description(APP, ENV),
            floating_ip_address="203.0.113.50",
            tags=tags_of(vip_marks),
            project_id=OTHER_PROJECT,
        )
    )
    port = neutron.add(
        "port",
        name=server,
        description=server_description(server),
        network_id=network_id,
        tags=tags_of(server_marks),
        project_id=OTHER_PROJECT,
    )
    made.append(port)
    made.append(
        neutron.add(
            "ip",
            port_id=port.id,
            description=server_description(server),
            floating_ip_address="203.0.113.51",
            tags=tags_of(server_marks),
            project_id=OTHER_PROJECT,
        )
    )
    return {item.id for item in made}


@pytest.fixture
def admin_cloud():
    conn = FakeConnection(PROJECT)
    mine = conn.network.add("network", name="private", is_router_external=False)
    # Another project's network of the same name: an admin's lookup by name sees both.
    conn.network.add("network", name="private", project_id=OTHER_PROJECT)
    conn.network.add(
        "subnet", name="private-subnet", network_id=mine.id, ip_version=4, cidr="10.0.0.0/24"
    )
    theirs = other_projects_twin(conn, mine.id)
    made = provider.OpenStackProvider(
        provider.OpenStackSettings.from_mapping(SETTINGS), connection=conn
    )
    return made, conn, mine, theirs


def unscoped_lists(conn: FakeConnection) -> list[tuple[str, dict]]:
    """The Neutron list calls made without the connection's project."""
    return [
        (method, query)
        for method, query in conn.network.calls
        if method in LISTS
        and query.get("project_id") != PROJECT
        and (method, set(query)) not in UNSCOPED
    ]


def test_every_neutron_list_and_find_is_scoped_to_the_project(admin_cloud):
    made, conn, _, _ = admin_cloud
    network = made.ensure_env(APP, ENV)
    parts = made.parts.find(APP, ENV, made.cloud.network())
    made.parts.make_floating_ip(
        conn.network.add("network", name="public", is_router_external=True),
        parts.vip_port,
        {**naming.ownership(APP, ENV), naming.MARK_ROLE: ROLE_VIP},
        vip_description(APP, ENV),
    )
    # Our floating IP now, not theirs (203.0.113.50).
    assert made.find_env(APP, ENV).public_address == "203.0.113.9"
    assert made.find_env(APP, ENV).vip == network.vip
    assert made.servers.floating_addresses() == {}
    assert made.list_envs() == [(APP, ENV)]
    made.servers._delete_one(f"app-0-{APP}-{ENV}", None, time.monotonic() + 5)
    made.teardown_env(APP, ENV)

    assert unscoped_lists(conn) == []
    finds = [query for method, query in conn.network.calls if method == "find_network"]
    assert finds[0] == {"name_or_id": "private", "project_id": PROJECT}
    # Nova lists the project's own servers and server groups unless asked for all.
    assert all(not query.get("all_projects") for _, query in conn.compute.calls)


def test_another_projects_twin_environment_is_never_seen_or_touched(admin_cloud):
    made, conn, mine, theirs = admin_cloud
    assert made.find_env(APP, ENV) is None  # theirs is not ours
    assert made.servers.floating_addresses() == {}
    assert made.list_envs() == []

    network = made.ensure_env(APP, ENV)
    assert made.cloud.network().id == mine.id
    assert network.vip == "10.0.0.9"  # our own VIP port, not theirs (10.0.0.50)
    # The VRRP router id theirs holds on the shared network is not taken again.
    assert network.router_id != naming.preferred_router_id(APP, ENV)

    made.servers._delete_one(f"app-0-{APP}-{ENV}", None, time.monotonic() + 5)
    made.teardown_env(APP, ENV)
    assert theirs <= set(conn.network.resources), "another project's resource was deleted"
    assert not set(conn.network.deleted) & theirs
    ours = [r for r in conn.network.resources.values() if r.project_id == PROJECT]
    assert {r.kind for r in ours} <= {"network", "subnet", "security_group_rule"}
