"""What ``check`` refuses before anything is made: missing resources, features and quota."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace
from typing import Any

from gdl import naming
from gdl.errors import CapacityError, ProviderError
from gdl.providers.openstack.api import API_ERRORS, find, translate
from gdl.providers.openstack.boot import check_disk
from gdl.providers.openstack.cloud import Cloud
from gdl.providers.openstack.network import EnvParts, Parts
from gdl.providers.openstack.security import wanted_rules
from gdl.spec import EnvSpec

# The rules Neutron gives a new security group itself: egress to anywhere, IPv4 and IPv6.
DEFAULT_EGRESS_RULES = 2
RULE_FIELDS = (
    "protocol",
    "port_range_min",
    "port_range_max",
    "remote_ip_prefix",
    "remote_group_id",
)


def check_request(cloud: Cloud, parts: Parts, spec: EnvSpec) -> None:
    """Refuse, with one clear error, a request this cloud and project cannot serve."""
    cloud.authorize()
    try:
        image = cloud.image()
        flavor = cloud.flavor(spec.size)
        check_disk(cloud.cfg, image, flavor)
        # The VRRP pair is made from its salt-cloud profile, which names its own size.
        lb_flavor = cloud.flavor(spec.lb_size) if spec.lb_size else flavor
        check_disk(cloud.cfg, image, lb_flavor)
        check_block_storage(cloud)
        network = cloud.network()
        # The SDK reads a missing port_security_enabled as False: without the extension,
        # security groups always apply.
        if not network.is_port_security_enabled and find(
            cloud.conn.network.find_extension, "port-security"
        ):
            raise ProviderError(
                f"network {network.name!r} has port security disabled, so the security "
                "groups and the VIP's address pairs would not apply",
                "enable it (openstack network set --enable-port-security) "
                "or choose another network",
            )
        cloud.subnet(network)
        cloud.external_network(network)
        cloud.key_name()
        cloud.master_group()
        if find(cloud.conn.network.find_extension, "allowed-address-pairs") is None:
            raise ProviderError(
                "this cloud's Neutron lacks the allowed-address-pairs extension",
                "the VIP needs it: ask the cloud's operator to enable it",
            )
        check_quotas(cloud, parts, spec, {"app": flavor, "lb": lb_flavor}, network)
    except API_ERRORS as error:
        raise translate(error, "checking the request") from None


def check_block_storage(cloud: Cloud) -> None:
    """Refuse boot_from_volume on a cloud whose catalog has no block storage (Cinder)."""
    # The catalog read quietly: has_service() logs a warning when the entry is missing.
    # Any of the service type's names counts (volumev3, block-storage, ...).
    if cloud.cfg.boot_from_volume and not cloud.conn.config.get_endpoint_from_catalog(
        "block-storage"
    ):
        raise ProviderError(
            "gdl:openstack:boot_from_volume is set and this cloud has no block storage (Cinder)",
            "map the size to a flavor with a disk and drop boot_from_volume",
        )


def check_quotas(
    cloud: Cloud, parts: Parts, spec: EnvSpec, flavors: dict[str, Any], network: Any
) -> None:
    """Refuse a build the project's compute and network quotas cannot hold.

    ``flavors`` gives each role's flavor: the pair's comes from its own profile.
    """
    existing = cloud.owned_servers(spec.app, spec.env)
    held = Counter(
        parsed.role for s in existing if (parsed := naming.parse_server_name(s.name or ""))
    )
    new = {"app": max(0, spec.servers - held["app"]), "lb": max(0, 2 - held["lb"])}
    new_servers = sum(new.values())
    found = parts.find(spec.app, spec.env, network)
    need_compute = {
        "instances": new_servers,
        "cores": sum(new[role] * (flavors[role].vcpus or 0) for role in new),
        "ram": sum(new[role] * (flavors[role].ram or 0) for role in new),
        "server_groups": 2 - len(found.server_groups) if found else 2,
    }
    need_network = {
        "ports": new_servers + (0 if found and found.vip_port else 1),
        "security_groups": 2 - len(found.security_groups) if found else 2,
        "security_group_rules": rules_to_add(cloud, found),
        "floating_ips": 0
        if not cloud.cfg.floating_ip or network.is_router_external or (found and found.floating_ip)
        else 1,
    }
    project = cloud.project_id()
    compute = cloud.conn.compute.get_quota_set(project, usage=True)
    short = []
    for key, need in need_compute.items():
        limit = getattr(compute, key, None)
        used = (compute.usage or {}).get(key, 0)
        if need and limit is not None and limit >= 0 and limit - used < need:
            short.append(f"{key} needs {need}, {max(0, limit - used)} free of {limit}")
    short += short_of_group_members(compute, spec, existing, found)
    quota = cloud.conn.network.get_quota(project, details=True)
    for key, need in need_network.items():
        detail = getattr(quota, key, None) or {}
        limit = detail.get("limit", -1)
        used = detail.get("used", 0) + detail.get("reserved", 0)
        if need and limit >= 0 and limit - used < need:
            short.append(f"{key} needs {need}, {max(0, limit - used)} free of {limit}")
    if short:
        raise CapacityError(
            f"the project's quota cannot hold {spec.env_id}: {'; '.join(short)}; nothing was made",
            "raise the quota (openstack quota set) or ask for fewer or smaller servers",
        )


def short_of_group_members(
    compute: Any, spec: EnvSpec, existing: list[Any], found: EnvParts | None
) -> list[str]:
    """What Nova's per-group ``server_group_members`` quota lacks for each role's new servers.

    The load balancers' group holds the pair, the app servers' group every app server.
    """
    limit = getattr(compute, "server_group_members", None)
    if limit is None or limit < 0:
        return []
    present = {server.name for server in existing}
    wanted = {"lb": 2, "app": spec.servers}
    short = []
    for role in naming.ROLES:
        names = {naming.server_name(role, i, spec.app, spec.env) for i in range(wanted[role])}
        need = len(names - present)
        group = found.server_groups.get(role) if found else None
        members = len(getattr(group, "member_ids", None) or []) if group is not None else 0
        if need and limit - members < need:
            short.append(
                f"server_group_members needs {need} in the {role} servers' group, "
                f"{max(0, limit - members)} free of {limit}"
            )
    return short


def rules_to_add(cloud: Cloud, found: EnvParts | None) -> int:
    """How many security group rules a build adds: those its groups lack, and new groups' own.

    Neutron gives every new security group its default egress rules, which count too.
    """
    groups = found.security_groups if found else {}
    # A group still to be made stands in under a placeholder id (rules name the LBs' group).
    named = {role: groups.get(role) or SimpleNamespace(id=f"new-{role}") for role in naming.ROLES}
    master_group = cloud.master_group()
    master_group_id = master_group.id if master_group is not None else None
    count = 0
    for role, rules in wanted_rules(named, cloud.cfg.master_source_cidr, master_group_id).items():
        group = groups.get(role)
        if group is None:
            # and, in the master's own group, Salt's ports from the new group
            count += len(rules) + DEFAULT_EGRESS_RULES + (master_group is not None)
            continue
        have = {
            rule_key(vars_of(rule))
            for rule in cloud.owned(
                "security_group_rules", security_group_id=group.id, direction="ingress"
            )
        }
        count += sum(1 for rule in rules if rule_key(rule) not in have)
    return count


def vars_of(rule: Any) -> dict[str, Any]:
    """A listed rule's fields as :func:`wanted_rules` spells them."""
    return {field: getattr(rule, field, None) for field in RULE_FIELDS}


def rule_key(rule: dict[str, Any]) -> tuple:
    """What makes two ingress rules the same rule."""
    return tuple(
        str(rule.get(field)) if field == "protocol" else rule.get(field) for field in RULE_FIELDS
    )
