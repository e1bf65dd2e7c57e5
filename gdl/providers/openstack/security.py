"""What each role's security group admits, and what the master's own group admits.

Load balancers take HTTP and HTTPS from anywhere and VRRP from each other; app servers take
HTTP from the load balancers only; both take SSH from the master alone, and the load
balancers their metrics port too.  "The master" is where its traffic comes from as the
cloud sees it (``master_source_cidr``), and members of its security group when it is an
instance of the cloud.  Salt's ports are not opened on the servers: minions dial out to
the master.  A master in the cloud gets them opened in its own group, from the
environment's groups, and those rules go with the environment.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

import openstack
from openstack import exceptions as os_exceptions

from gdl.providers.openstack.api import retry

VRRP_PROTOCOL = "112"
SALT_PORTS = (4505, 4506)
# haproxy's Prometheus metrics and stats page on each LB's own address: the default of
# gdl:roles:lb:haproxy:metrics_port in states/gdl/parameters/defaults.yaml.
METRICS_PORT = 8404


def tcp(low: int, high: int | None = None, **source: Any) -> dict[str, Any]:
    return {"protocol": "tcp", "port_range_min": low, "port_range_max": high or low, **source}


def wanted_rules(
    security_groups: dict[str, Any],
    master_cidr: str | None,
    master_group_id: str | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Role -> the ingress rules its security group needs."""
    lb = security_groups["lb"].id
    masters: list[dict[str, Any]] = []
    if master_cidr is not None:
        masters.append({"remote_ip_prefix": master_cidr})
    if master_group_id is not None:
        masters.append({"remote_group_id": master_group_id})
    ssh = [tcp(22, **source) for source in masters]
    return {
        "lb": [
            tcp(80, remote_ip_prefix="0.0.0.0/0"),
            tcp(443, remote_ip_prefix="0.0.0.0/0"),
            *ssh,
            *(tcp(METRICS_PORT, **source) for source in masters),
            {"protocol": VRRP_PROTOCOL, "remote_group_id": lb},
        ],
        "app": [tcp(80, remote_group_id=lb), *ssh],
    }


def _key(rule: Any) -> tuple:
    get = rule.get if isinstance(rule, dict) else lambda name: getattr(rule, name, None)
    return (
        str(get("protocol")),
        get("port_range_min"),
        get("port_range_max"),
        get("remote_ip_prefix"),
        get("remote_group_id"),
    )


def _is_salt(rule: Any) -> bool:
    return (rule.protocol, rule.port_range_min, rule.port_range_max) == ("tcp", *SALT_PORTS)


def _add(conn: openstack.connection.Connection, group_id: str, rule: dict[str, Any]) -> None:
    # Another builder of the same environment may add it at the same time.
    with contextlib.suppress(os_exceptions.ConflictException):
        retry(
            lambda: conn.network.create_security_group_rule(
                security_group_id=group_id, direction="ingress", ethertype="IPv4", **rule
            )
        )


def _delete(conn: openstack.connection.Connection, rule: Any) -> None:
    retry(lambda: conn.network.delete_security_group_rule(rule, ignore_missing=True))


def ensure_rules(
    conn: openstack.connection.Connection,
    security_groups: dict[str, Any],
    master_cidr: str | None,
    master_group_id: str | None = None,
) -> None:
    """Add to each role's security group the wanted rules it lacks.

    Salt's ports, which environments made by an earlier gdl opened to the master, are
    closed: minions dial out.
    """
    for role, rules in wanted_rules(security_groups, master_cidr, master_group_id).items():
        group = security_groups[role]
        have = list(
            conn.network.security_group_rules(security_group_id=group.id, direction="ingress")
        )
        for rule in have:
            if _is_salt(rule):
                _delete(conn, rule)
        present = {_key(r) for r in have}
        for rule in rules:
            if _key(rule) not in present:
                _add(conn, group.id, rule)


def ensure_master_rules(
    conn: openstack.connection.Connection, master_group: Any, security_groups: dict[str, Any]
) -> None:
    """Admit Salt's ports in the master's own group from each of the environment's groups."""
    present = {
        _key(r)
        for r in conn.network.security_group_rules(
            security_group_id=master_group.id, direction="ingress"
        )
    }
    for group in security_groups.values():
        rule = tcp(*SALT_PORTS, remote_group_id=group.id)
        if _key(rule) not in present:
            _add(conn, master_group.id, {**rule, "description": f"Salt from {group.name}"})


def remove_master_rules(conn: openstack.connection.Connection, group_ids: Iterable[str]) -> None:
    """Remove the rules ``ensure_master_rules`` added for these groups, wherever they are.

    By what they are (Salt's ports from one of these groups, in another group), so a
    master group renamed or dropped from the settings since the build is cleaned up too.
    """
    ours = set(group_ids)
    for group_id in ours:
        for rule in conn.network.security_group_rules(
            remote_group_id=group_id, direction="ingress", project_id=conn.current_project_id
        ):
            if rule.security_group_id not in ours and _is_salt(rule):
                _delete(conn, rule)
