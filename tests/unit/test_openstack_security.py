"""What the OpenStack security groups admit, without a cloud: the wanted rules and their upkeep."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml

from gdl.providers.openstack import security

REPO_ROOT = Path(__file__).resolve().parents[2]
MASTER = "10.0.0.2"
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
    wanted = security.wanted_rules(GROUPS, MASTER)
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
    wanted = security.wanted_rules(GROUPS, MASTER)
    master = f"{MASTER}/32"
    assert as_tuples(wanted["lb"]) == {
        ("tcp", 80, 80, "0.0.0.0/0", None),
        ("tcp", 443, 443, "0.0.0.0/0", None),
        ("tcp", 22, 22, master, None),
        ("tcp", 4505, 4506, master, None),
        ("tcp", 8404, 8404, master, None),
        ("112", None, None, None, "sg-lb"),
    }
    assert as_tuples(wanted["app"]) == {
        ("tcp", 80, 80, None, "sg-lb"),
        ("tcp", 22, 22, master, None),
        ("tcp", 4505, 4506, master, None),
    }


class FakeNetwork:
    """The two calls ensure_rules makes of ``conn.network``."""

    def __init__(self, existing: dict[str, list[dict[str, Any]]]) -> None:
        self.existing = existing
        self.created: list[dict[str, Any]] = []

    def security_group_rules(self, security_group_id: str, direction: str) -> list[Any]:
        assert direction == "ingress"
        fields = ("protocol", "port_range_min", "port_range_max")
        fields += ("remote_ip_prefix", "remote_group_id")
        return [
            SimpleNamespace(**{key: rule.get(key) for key in fields})
            for rule in self.existing.get(security_group_id, [])
        ]

    def create_security_group_rule(self, **rule: Any) -> None:
        self.created.append(rule)


def test_an_older_environment_gets_the_metrics_rule_and_nothing_else():
    """A group made before the metrics port existed gains that one rule on the next build."""
    wanted = security.wanted_rules(GROUPS, MASTER)
    older = {
        "sg-lb": [r for r in wanted["lb"] if r.get("port_range_min") != security.METRICS_PORT],
        "sg-app": list(wanted["app"]),
    }
    network = FakeNetwork(older)
    security.ensure_rules(SimpleNamespace(network=network), GROUPS, MASTER)
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


def test_metrics_port_is_the_lb_roles_default():
    defaults = yaml.safe_load(
        (REPO_ROOT / "states" / "gdl" / "parameters" / "defaults.yaml").read_text()
    )
    assert defaults["gdl"]["roles"]["lb"]["haproxy"]["metrics_port"] == security.METRICS_PORT
