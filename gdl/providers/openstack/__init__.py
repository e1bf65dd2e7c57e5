"""The OpenStack provider, on openstacksdk.

An environment (app, env) on OpenStack is:

- two security groups, ``gdl-<app>-<env>-lb`` and ``gdl-<app>-<env>-app``;
- two server groups of the same names (soft anti-affinity when the compute API has it);
- a VIP port on the environment's network: its fixed address is the address keepalived
  moves between the two load balancers, and its tags hold the VRRP router id;
- a floating IP on the VIP port, unless ``floating_ip: false`` or the network is external;
- servers, each with one port made by gdl (a load balancer's port lists the VIP as an
  allowed address pair, so Neutron's port security lets it answer for the VIP).

Everything is looked up from the cloud, never remembered: a destroy after a build that
died half-way finds and removes whatever was made.

Where things live:

- ``settings``: the ``gdl:openstack`` settings, checked;
- ``api``: the connection, bounded retries, failures in the operator's words, and user
  data kept out of the logs;
- ``marks``: tags, names and descriptions that mark gdl's resources, and the VRRP router id;
- ``cloud``: one lazy connection and the lookups (network, subnet, external network, image,
  flavor, key pair, tagged resources) every part shares;
- ``routing``: the subnet chosen and where floating IPs come from (its router's gateway);
- ``boot``: the image chosen, the flavor's disk checked, the boot volume;
- ``records``: Nova's states and servers in the Provider interface's words;
- ``network`` and ``security``: an environment's network parts and what its security
  groups admit;
- ``servers``: servers made in parallel, waited for, listed and deleted with their ports;
- ``check``: what is refused before anything is made, quotas included;
- ``provider``: :class:`OpenStackProvider`, the Provider verbs over all of these.
"""

from gdl.providers.openstack.api import (
    connect,
    is_transient,
    poll_delays,
    redact_user_data_in_logs,
    retry,
    retry_after,
    translate,
)
from gdl.providers.openstack.marks import (
    MARK_SERVER,
    group_description,
    group_name,
    marks_of,
    next_router_id,
    tags_of,
    vip_description,
    vip_port_name,
)
from gdl.providers.openstack.provider import OpenStackProvider
from gdl.providers.openstack.settings import OpenStackSettings

__all__ = [
    "MARK_SERVER",
    "OpenStackProvider",
    "OpenStackSettings",
    "connect",
    "group_description",
    "group_name",
    "is_transient",
    "marks_of",
    "next_router_id",
    "poll_delays",
    "redact_user_data_in_logs",
    "retry",
    "retry_after",
    "tags_of",
    "translate",
    "vip_description",
    "vip_port_name",
]
