"""What ``check`` refuses before anything is made: missing resources, features and quota."""

from __future__ import annotations

from typing import Any

from gdl.errors import CapacityError, ProviderError
from gdl.providers.openstack.api import API_ERRORS, find, translate
from gdl.providers.openstack.boot import check_disk
from gdl.providers.openstack.cloud import Cloud
from gdl.providers.openstack.network import Parts
from gdl.spec import EnvSpec


def check_request(cloud: Cloud, parts: Parts, spec: EnvSpec) -> None:
    """Refuse, with one clear error, a request this cloud and project cannot serve."""
    cloud.authorize()
    try:
        image = cloud.image()
        flavor = cloud.flavor(spec.size)
        check_disk(cloud.cfg, image, flavor)
        # The catalog read quietly: has_service() logs a warning when the entry is missing.
        if cloud.cfg.boot_from_volume and not cloud.conn.config.get_endpoint_from_catalog(
            "block-storage"
        ):
            raise ProviderError(
                "gdl:openstack:boot_from_volume is set and this cloud has no block storage "
                "(Cinder)",
                "map the size to a flavor with a disk and drop boot_from_volume",
            )
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
        check_quotas(cloud, parts, spec, flavor, network)
    except API_ERRORS as error:
        raise translate(error, "checking the request") from None


def check_quotas(cloud: Cloud, parts: Parts, spec: EnvSpec, flavor: Any, network: Any) -> None:
    """Refuse a build the project's compute and network quotas cannot hold."""
    existing = cloud.owned_servers(spec.app, spec.env)
    new_servers = max(0, spec.servers + 2 - len(existing))
    found = parts.find(spec.app, spec.env, network)
    need_compute = {
        "instances": new_servers,
        "cores": new_servers * (flavor.vcpus or 0),
        "ram": new_servers * (flavor.ram or 0),
        "server_groups": 2 - len(found.server_groups) if found else 2,
    }
    need_network = {
        "ports": new_servers + (0 if found and found.vip_port else 1),
        "security_groups": 2 - len(found.security_groups) if found else 2,
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
    quota = cloud.conn.network.get_quota(project, details=True)
    for key, need in need_network.items():
        detail = getattr(quota, key, None) or {}
        limit = detail.get("limit", -1)
        used = detail.get("used", 0) + detail.get("reserved", 0)
        if need and limit >= 0 and limit - used < need:
            short.append(f"{key} needs {need}, {max(0, limit - used)} free of {limit}")
    if short:
        raise CapacityError(
            f"the project's quota cannot hold {spec.env_id}: {'; '.join(short)}",
            "raise the quota (openstack quota set) or ask for fewer or smaller servers",
        )
