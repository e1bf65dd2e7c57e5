"""What each role's security group admits.

Load balancers take HTTP and HTTPS from anywhere and VRRP from each other; app servers take
HTTP from the load balancers only; both take SSH and Salt's ports from the master alone, and
the load balancers their metrics port too.
"""

from __future__ import annotations

import contextlib
from typing import Any

import openstack
from openstack import exceptions as os_exceptions

from gdl.providers.openstack.api import retry

VRRP_PROTOCOL = "112"
SALT_PORTS = (4505, 4506)
# haproxy's Prometheus metrics and stats page on each LB's own address: the default of
# gdl:roles:lb:haproxy:metrics_port in states/gdl/parameters/defaults.yaml.
METRICS_PORT = 8404


def wanted_rules(
    security_groups: dict[str, Any], master_address: str
) -> dict[str, list[dict[str, Any]]]:
    """Role -> the ingress rules its security group needs."""
    master = f"{master_address}/32"
    lb = security_groups["lb"].id

    def tcp(low: int, high: int | None = None, **source: Any) -> dict[str, Any]:
        return {
            "protocol": "tcp",
            "port_range_min": low,
            "port_range_max": high or low,
            **source,
        }

    from_master = [tcp(22, remote_ip_prefix=master), tcp(*SALT_PORTS, remote_ip_prefix=master)]
    return {
        "lb": [
            tcp(80, remote_ip_prefix="0.0.0.0/0"),
            tcp(443, remote_ip_prefix="0.0.0.0/0"),
            *from_master,
            tcp(METRICS_PORT, remote_ip_prefix=master),
            {"protocol": VRRP_PROTOCOL, "remote_group_id": lb},
        ],
        "app": [tcp(80, remote_group_id=lb), *from_master],
    }


def ensure_rules(
    conn: openstack.connection.Connection,
    security_groups: dict[str, Any],
    master_address: str,
) -> None:
    """Add to each role's security group the wanted rules it lacks."""

    def key(rule: dict[str, Any]) -> tuple:
        return (
            str(rule.get("protocol")),
            rule.get("port_range_min"),
            rule.get("port_range_max"),
            rule.get("remote_ip_prefix"),
            rule.get("remote_group_id"),
        )

    for role, rules in wanted_rules(security_groups, master_address).items():
        group = security_groups[role]
        have = {
            key(
                {
                    "protocol": r.protocol,
                    "port_range_min": r.port_range_min,
                    "port_range_max": r.port_range_max,
                    "remote_ip_prefix": r.remote_ip_prefix,
                    "remote_group_id": r.remote_group_id,
                }
            )
            for r in conn.network.security_group_rules(
                security_group_id=group.id, direction="ingress"
            )
        }
        for rule in rules:
            if key(rule) in have:
                continue
            # Another builder of the same environment may add it at the same time.
            with contextlib.suppress(os_exceptions.ConflictException):
                retry(
                    lambda rule=rule, group=group: conn.network.create_security_group_rule(
                        security_group_id=group.id,
                        direction="ingress",
                        ethertype="IPv4",
                        **rule,
                    )
                )
