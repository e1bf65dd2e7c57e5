"""Which subnet the servers use and where their floating IPs come from.

Decided from what the cloud lists, by plain functions (testable without a cloud):
a floating IP reaches a fixed address only through a router between the fixed address's
subnet and the floating IP's external network.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from gdl.errors import ConfigError, NotFound

# Stands for a router this project cannot read (another project's, e.g. the cloud's own).
UNSEEN = "?"


def only_ipv4_subnet(network: Any, subnets: Iterable[Any]) -> Any:
    """The network's one IPv4 subnet; refused when it has none or several."""
    ipv4 = [s for s in subnets if s.ip_version == 4]
    if not ipv4:
        raise NotFound(
            f"network {network.name!r} has no IPv4 subnet",
            "add an IPv4 subnet to it or choose another network",
        )
    if len(ipv4) > 1:
        names = ", ".join(sorted(s.name or s.id for s in ipv4))
        raise ConfigError(
            f"network {network.name!r} has {len(ipv4)} IPv4 subnets ({names})",
            "set gdl:openstack:subnet to the one the servers use",
        )
    return ipv4[0]


def checked_subnet(wanted: str, network: Any, subnet: Any | None) -> Any:
    """The subnet ``wanted`` names, refused unless it is an IPv4 subnet of ``network``."""
    if subnet is None or subnet.network_id != network.id:
        raise NotFound(
            f"subnet {wanted!r} is not a subnet of network {network.name!r}",
            f"set gdl:openstack:subnet to one of its subnets (openstack subnet list "
            f"--network {network.id})",
        )
    if subnet.ip_version != 4:
        raise ConfigError(
            f"subnet {subnet.name or subnet.id!r} is IPv6, which gdl does not support yet",
            "set gdl:openstack:subnet to an IPv4 subnet of the network",
        )
    return subnet


def floating_network_id(subnet: Any, gateways: set[str], configured: Any | None) -> str:
    """The external network floating IPs come from, by id.

    ``gateways``: the external networks of the subnet's routers (``UNSEEN`` for a router
    this project cannot read); ``configured``: the ``external_network`` setting's network.
    """
    label = subnet.name or subnet.id
    known = gateways - {UNSEEN}
    if configured is not None:
        # A router this project cannot read may well lead there: trust the setting.
        if configured.id not in known and UNSEEN not in gateways:
            raise ConfigError(
                f"subnet {label!r} has no router to external network {configured.name!r}",
                "add the subnet to a router with that gateway (openstack router add subnet), "
                "or set floating_ip: false if the master reaches fixed addresses",
            )
        return configured.id
    if len(known) == 1 and UNSEEN not in gateways:
        return next(iter(known))
    if not gateways:
        raise ConfigError(
            f"subnet {label!r} has no router to an external network, "
            "so floating IPs cannot reach it",
            "add it to a router with an external gateway, or set floating_ip: false "
            "if the master reaches the servers' fixed addresses",
        )
    raise ConfigError(
        f"subnet {label!r} has routers to external networks gdl cannot choose between",
        "set gdl:openstack:external_network to the one floating IPs come from",
    )
