"""What the OpenStack security groups admit, without a cloud: the wanted rules and their upkeep."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml

from gdl.providers.openstack import security

REPO_ROOT = Path(__file__).resolve().parents[2]
MASTER = "10.0.0.2"
FROM_MASTER = f"{MASTER}/32"
VRRP = security.VRRP_PROTOCOL
GROUPS = {"lb": SimpleNamespace(id="sg-lb"), "app": SimpleNamespace(id="sg-app")}


def as_tuples(rules: list[dict[str, Any]]) -> set[tuple]:
    return {
        (
            r["protocol"],
            r.get("port_range_min"),
            r.get("port_range_max"),
            r.get("remote_ip_prefix"),
            r.get("remote_group_id"),
        )
        for r in rules
    }


def test_metrics_port_is_admitted_on_load_balancers_from_the_master_only():
    wanted = security.wanted_rules(GROUPS, FROM_MASTER)
    metrics = [r for r in wanted["lb"] if r.get("port_range_min") == security.METRICS_PORT]
    assert as_tuples(metrics) == {("tcp", 8404, 8404, f"{MASTER}/32", None)}
    assert not [r for r in wanted["app"] if r.get("port_range_min") == security.METRICS_PORT]
    # Nothing else opens it: no rule of any role spans 8404 from another source.
    for rules in wanted.values():
        for rule in rules:
            low, high = rule.get("port_range_min"), rule.get("port_range_max")
            if low is not None and low <= security.METRICS_PORT <= high:
                assert rule.get("remote_ip_prefix") == f"{MASTER}/32", rule


def test_the_rules_of_each_role_are_as_documented():
    wanted = security.wanted_rules(GROUPS, FROM_MASTER)
    master = FROM_MASTER
    assert as_tuples(wanted["lb"]) == {
        ("tcp", 80, 80, "0.0.0.0/0", None),
        ("tcp", 443, 443, "0.0.0.0/0", None),
        ("tcp", 22, 22, master, None),
        ("tcp", 8404, 8404, master, None),
        ("112", None, None, None, "sg-lb"),
    }
    assert as_tuples(wanted["app"]) == {
        ("tcp", 80, 80, None, "sg-lb"),
        ("tcp", 22, 22, master, None),
    }


def test_no_role_opens_salts_ports_minions_dial_out():
    for sources in ((FROM_MASTER, None), (FROM_MASTER, "sg-master"), (None, "sg-master")):
        for rules in security.wanted_rules(GROUPS, *sources).values():
            for rule in rules:
                low, high = rule.get("port_range_min"), rule.get("port_range_max")
                assert low is None or high < 4505 or low > 4506, rule


def test_a_master_in_the_cloud_is_admitted_by_its_security_group():
    wanted = security.wanted_rules(GROUPS, None, "sg-master")
    assert as_tuples(wanted["lb"]) == {
        ("tcp", 80, 80, "0.0.0.0/0", None),
        ("tcp", 443, 443, "0.0.0.0/0", None),
        ("tcp", 22, 22, None, "sg-master"),
        ("tcp", 8404, 8404, None, "sg-master"),
        ("112", None, None, None, "sg-lb"),
    }
    assert as_tuples(wanted["app"]) == {
        ("tcp", 80, 80, None, "sg-lb"),
        ("tcp", 22, 22, None, "sg-master"),
    }
    # With a source address as well, both are admitted.
    both = security.wanted_rules(GROUPS, FROM_MASTER, "sg-master")
    assert as_tuples(both["app"]) == as_tuples(wanted["app"]) | {("tcp", 22, 22, FROM_MASTER, None)}


PROJECT = "project-1"


class FakeNetwork:
    """The rule calls the security module makes of ``conn.network``, on a dict of groups."""

    FIELDS = ("protocol", "port_range_min", "port_range_max", "remote_ip_prefix")
    FIELDS += ("remote_group_id",)

    def __init__(self, existing: dict[str, list[dict[str, Any]]]) -> None:
        self.rules = [
            SimpleNamespace(
                id=f"rule-{n}",
                security_group_id=group_id,
                project_id=PROJECT,
                **{key: rule.get(key) for key in self.FIELDS},
            )
            for n, (group_id, rule) in enumerate(
                (g, r) for g, rules in existing.items() for r in rules
            )
        ]
        self.created: list[dict[str, Any]] = []
        self.deleted: list[Any] = []

    def security_group_rules(self, direction: str, **query: str) -> list[Any]:
        assert direction == "ingress"
        return [r for r in self.rules if all(getattr(r, k) == v for k, v in query.items())]

    def create_security_group_rule(self, **rule: Any) -> None:
        self.created.append(rule)

    def delete_security_group_rule(self, rule: Any, ignore_missing: bool) -> None:
        self.deleted.append(rule)


def test_an_older_environment_gets_the_metrics_rule_and_nothing_else():
    """A group made before the metrics port existed gains that one rule on the next build."""
    wanted = security.wanted_rules(GROUPS, FROM_MASTER)
    older = {
        "sg-lb": [r for r in wanted["lb"] if r.get("port_range_min") != security.METRICS_PORT],
        "sg-app": list(wanted["app"]),
    }
    network = FakeNetwork(older)
    security.ensure_rules(SimpleNamespace(network=network), GROUPS, FROM_MASTER)
    assert network.created == [
        {
            "security_group_id": "sg-lb",
            "direction": "ingress",
            "ethertype": "IPv4",
            "protocol": "tcp",
            "port_range_min": 8404,
            "port_range_max": 8404,
            "remote_ip_prefix": f"{MASTER}/32",
        }
    ]


def test_an_older_environment_loses_the_salt_rules_and_keeps_the_rest():
    """Environments made when minions were dialled in had Salt's ports open to the master."""
    wanted = security.wanted_rules(GROUPS, FROM_MASTER)
    salt = {"protocol": "tcp", "port_range_min": 4505, "port_range_max": 4506}
    older = {
        "sg-lb": [*wanted["lb"], {**salt, "remote_ip_prefix": FROM_MASTER}],
        "sg-app": [*wanted["app"], {**salt, "remote_ip_prefix": FROM_MASTER}],
    }
    network = FakeNetwork(older)
    security.ensure_rules(SimpleNamespace(network=network), GROUPS, FROM_MASTER)
    assert network.created == []
    assert sorted((r.security_group_id, r.port_range_min) for r in network.deleted) == [
        ("sg-app", 4505),
        ("sg-lb", 4505),
    ]


MASTER_GROUP = SimpleNamespace(id="sg-master", name="salt-master")
NAMED = {
    "lb": SimpleNamespace(id="sg-lb", name="gdl-blog-dev-lb"),
    "app": SimpleNamespace(id="sg-app", name="gdl-blog-dev-app"),
}


def test_the_masters_group_admits_salt_from_the_environments_groups_once():
    network = FakeNetwork(
        {
            "sg-master": [
                {
                    "protocol": "tcp",
                    "port_range_min": 22,
                    "port_range_max": 22,
                    "remote_ip_prefix": "0.0.0.0/0",
                }
            ]
        }
    )
    conn = SimpleNamespace(network=network)
    security.ensure_master_rules(conn, MASTER_GROUP, NAMED)
    assert network.created == [
        {
            "security_group_id": "sg-master",
            "direction": "ingress",
            "ethertype": "IPv4",
            "protocol": "tcp",
            "port_range_min": 4505,
            "port_range_max": 4506,
            "remote_group_id": group.id,
            "description": f"Salt from {group.name}",
        }
        for group in NAMED.values()
    ]
    # A second build finds them and adds nothing.
    again = FakeNetwork(
        {
            "sg-master": [
                {k: v for k, v in r.items() if k in FakeNetwork.FIELDS} for r in network.created
            ]
        }
    )
    security.ensure_master_rules(SimpleNamespace(network=again), MASTER_GROUP, NAMED)
    assert again.created == []


def test_destroy_removes_exactly_the_salt_rules_added_for_its_groups():
    salt = {"protocol": "tcp", "port_range_min": 4505, "port_range_max": 4506}
    network = FakeNetwork(
        {
            "sg-master": [
                {**salt, "remote_group_id": "sg-lb"},  # ours
                {**salt, "remote_group_id": "sg-app"},  # ours
                {**salt, "remote_group_id": "sg-other-env"},  # another environment's
                {**salt, "remote_ip_prefix": "10.0.0.0/8"},  # the operator's
                {
                    "protocol": "tcp",
                    "port_range_min": 22,
                    "port_range_max": 22,
                    "remote_group_id": "sg-lb",
                },  # the operator's, from our group
            ],
            "sg-lb": [{"protocol": VRRP, "remote_group_id": "sg-lb"}],  # the group's own
        }
    )
    security.remove_master_rules(
        SimpleNamespace(network=network, current_project_id=PROJECT), ["sg-lb", "sg-app"]
    )
    assert sorted(r.id for r in network.deleted) == ["rule-0", "rule-1"]


def test_metrics_port_is_the_lb_roles_default():
    defaults = yaml.safe_load(
        (REPO_ROOT / "states" / "gdl" / "parameters" / "defaults.yaml").read_text()
    )
    assert defaults["gdl"]["roles"]["lb"]["haproxy"]["metrics_port"] == security.METRICS_PORT
