"""The quota check counts server group members and security group rules.

The rig shows the instance and floating IP refusals (tests/openstack/test_provider.py);
these two quotas are checked here against a stand-in connection, the rules a build adds
counted from the very rules gdl would make (and from what a first build made already).
"""

from types import SimpleNamespace

import pytest

from gdl.errors import CapacityError
from gdl.providers import openstack as provider
from gdl.providers.openstack import check, security
from gdl.spec import EnvSpec
from tests.support.fake_openstack import PROJECT, FakeConnection

APP, ENV = "blog", "dev"
SETTINGS = {
    "image": "debian-12",
    "network": "private",
    "master_address": "10.0.0.2",
    "floating_ip": False,
}
FLAVOR = SimpleNamespace(vcpus=1, ram=512)
UNLIMITED = -1


def spec(servers: int) -> EnvSpec:
    return EnvSpec(app=APP, env=ENV, servers=servers, size="m1.small", provider="openstack")


def project(group_members: int = UNLIMITED, rules: int = UNLIMITED, rules_used: int = 0):
    """A provider in a project with these quotas (everything else unlimited)."""
    conn = FakeConnection(PROJECT)
    network = conn.network.add("network", name="private", is_router_external=False)
    conn.network.add(
        "subnet", name="private-subnet", network_id=network.id, ip_version=4, cidr="10.0.0.0/24"
    )
    conn.compute.get_quota_set = lambda project_id, usage: SimpleNamespace(
        instances=UNLIMITED,
        cores=UNLIMITED,
        ram=UNLIMITED,
        server_groups=UNLIMITED,
        server_group_members=group_members,
        usage={},
    )
    conn.network.get_quota = lambda project_id, details: SimpleNamespace(
        security_group_rules={"limit": rules, "used": rules_used, "reserved": 0}
    )
    made = provider.OpenStackProvider(
        provider.OpenStackSettings.from_mapping(SETTINGS), connection=conn
    )
    return made, conn, network


def checked(made, network, servers: int) -> None:
    check.check_quotas(
        made.cloud, made.parts, spec(servers), {"app": FLAVOR, "lb": FLAVOR}, network
    )


def refusal(made, network, servers: int) -> str:
    with pytest.raises(CapacityError) as caught:
        checked(made, network, servers)
    line = str(caught.value)
    assert "\n" not in line and len(line) < 300, line
    assert "nothing was made" in line
    return line


def test_the_app_servers_group_must_hold_every_app_server():
    made, conn, network = project(group_members=3)
    line = refusal(made, network, servers=4)
    assert "server_group_members needs 4 in the app servers' group, 3 free of 3" in line
    assert "lb servers' group" not in line  # the pair fits
    checked(made, network, servers=3)
    assert conn.network.deleted == [] and not [c for c in conn.network.calls if "create" in c[0]]


def test_a_group_of_two_cannot_hold_the_pair():
    made, _, network = project(group_members=1)
    line = refusal(made, network, servers=1)
    assert "server_group_members needs 2 in the lb servers' group, 1 free of 1" in line


def test_a_first_build_needs_every_rule_and_the_new_groups_own():
    groups = {role: SimpleNamespace(id=f"sg-{role}") for role in ("lb", "app")}
    wanted = security.wanted_rules(groups, SETTINGS["master_address"])
    # Neutron gives each new group two egress rules (IPv4, IPv6), counted by the quota.
    need = len(wanted["lb"]) + len(wanted["app"]) + 2 * 2
    made, _, network = project(rules=need + 3, rules_used=4)
    line = refusal(made, network, servers=2)
    assert f"security_group_rules needs {need}, {need - 1} free of {need + 3}" in line
    made, _, network = project(rules=need + 4, rules_used=4)
    checked(made, network, servers=2)


def test_a_rerun_needs_only_the_rules_its_groups_lack():
    made, conn, network = project()
    made.ensure_env(APP, ENV)
    rules = [r for r in conn.network.resources.values() if r.kind == "security_group_rule"]
    metrics = next(r for r in rules if r.port_range_min == security.METRICS_PORT)
    del conn.network.resources[metrics.id]
    used = len(rules) - 1
    conn.network.get_quota = lambda project_id, details: SimpleNamespace(
        security_group_rules={"limit": used, "used": used, "reserved": 0}
    )
    line = refusal(made, network, servers=2)
    assert f"security_group_rules needs 1, 0 free of {used}" in line
    conn.network.get_quota = lambda project_id, details: SimpleNamespace(
        security_group_rules={"limit": used + 1, "used": used, "reserved": 0}
    )
    checked(made, network, servers=2)


def test_cores_and_ram_count_each_roles_own_flavor():
    made, conn, network = project()
    conn.compute.get_quota_set = lambda project_id, usage: SimpleNamespace(
        instances=UNLIMITED, cores=7, ram=UNLIMITED, server_groups=UNLIMITED, usage={}
    )
    conn.network.get_quota = lambda project_id, details: SimpleNamespace()
    flavors = {"app": SimpleNamespace(vcpus=1, ram=512), "lb": SimpleNamespace(vcpus=4, ram=512)}
    # 3 app servers of 1 core and the pair of 4 each: 11 cores, not 5 x 1.
    with pytest.raises(CapacityError, match="cores needs 11, 7 free of 7"):
        check.check_quotas(made.cloud, made.parts, spec(3), flavors, network)
