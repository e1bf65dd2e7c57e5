"""The configured cloud: one connection, made when first needed, and the shared lookups."""

from __future__ import annotations

from typing import Any

import openstack
from openstack import exceptions as os_exceptions

from gdl import naming
from gdl.errors import ConfigError, NotFound
from gdl.providers.openstack.api import connect, find, retry, translate
from gdl.providers.openstack.boot import newest_active
from gdl.providers.openstack.marks import tags_of
from gdl.providers.openstack.records import GONE
from gdl.providers.openstack.routing import (
    UNSEEN,
    checked_subnet,
    floating_network_id,
    only_ipv4_subnet,
)
from gdl.providers.openstack.settings import OpenStackSettings

# The device owners of a router's ports on its internal subnets (legacy, DVR, HA routers).
ROUTER_INTERFACE_OWNERS = (
    "network:router_interface",
    "network:router_interface_distributed",
    "network:ha_router_replicated_interface",
)


class Cloud:
    """The cloud ``cfg`` names, and what gdl looks up in it."""

    def __init__(
        self, cfg: OpenStackSettings, connection: openstack.connection.Connection | None = None
    ) -> None:
        self.cfg = cfg
        self._connection = connection
        self._flavor_cache: dict[str, Any] = {}
        self._network: Any = None
        self._subnets: dict[str, Any] = {}
        self._image: Any = None

    @property
    def conn(self) -> openstack.connection.Connection:
        if self._connection is None:
            self._connection = connect(self.cfg)
        return self._connection

    def authorize(self) -> None:
        """Fetch a token now, so bad credentials fail first and alone."""
        try:
            self.conn.session.get_token()
        except Exception as error:
            raise translate(error, "logging in") from None

    def project_id(self) -> str:
        return self.conn.current_project_id

    def network(self) -> Any:
        """The servers' network, by name or id, looked up once."""
        if self._network is None:
            # This project's network of that name first (with admin credentials other
            # projects' networks of the same name are listed too), else a shared or
            # external one, which belongs to another project.
            network = self._find_one(
                "network", self.cfg.network, project_id=self.project_id()
            ) or self._find_one("network", self.cfg.network)
            if network is None:
                raise NotFound(
                    f"network {self.cfg.network!r} does not exist in this project",
                    "set gdl:openstack:network to an existing network (openstack network list)",
                )
            self._network = network
        return self._network

    def network_or_none(self) -> Any | None:
        """The servers' network, or None when it is gone (a destroy still proceeds)."""
        try:
            return self.network()
        except NotFound:
            return None

    def subnet(self, network: Any) -> Any:
        """The subnet servers' ports take their address on: ``subnet``, else the only IPv4 one."""
        if network.id in self._subnets:
            return self._subnets[network.id]
        if self.cfg.subnet:
            found = self._find_one("subnet", self.cfg.subnet, network_id=network.id)
            subnet = checked_subnet(self.cfg.subnet, network, found)
        else:
            subnet = only_ipv4_subnet(network, self.conn.network.subnets(network_id=network.id))
        self._subnets[network.id] = subnet
        return subnet

    def external_network(self, network: Any) -> Any | None:
        """Where floating IPs come from; None when none is wanted or ``network`` is external.

        It is the gateway of the subnet's router unless ``external_network`` names it
        (then that router must exist).
        """
        if not self.cfg.floating_ip or network.is_router_external:
            return None
        subnet = self.subnet(network)
        configured = None
        if self.cfg.external_network:
            configured = self._find_one("network", self.cfg.external_network)
            if configured is None:
                raise NotFound(
                    f"external network {self.cfg.external_network!r} does not exist",
                    "set gdl:openstack:external_network to a network with router:external",
                )
        chosen = floating_network_id(subnet, self.router_gateways(subnet), configured)
        if configured is not None:
            return configured
        return self.conn.network.get_network(chosen)

    def router_gateways(self, subnet: Any) -> set[str]:
        """The external networks of the routers the subnet is attached to (by network id).

        ``UNSEEN`` stands for a router this project cannot read.
        """
        gateways = set()
        for owner in ROUTER_INTERFACE_OWNERS:
            for port in self.conn.network.ports(
                device_owner=owner, fixed_ips=f"subnet_id={subnet.id}"
            ):
                router = find(self.conn.network.find_router, port.device_id)
                if router is None:
                    gateways.add(UNSEEN)
                    continue
                gateway = router.external_gateway_info or {}
                if gateway.get("network_id"):
                    gateways.add(gateway["network_id"])
        return gateways

    def flavor(self, size: str) -> Any:
        name = self.cfg.flavors.get(size, size)
        if name not in self._flavor_cache:
            flavor = find(self.conn.compute.find_flavor, name)
            if flavor is None:
                known = ", ".join(sorted(f.name for f in self.conn.compute.flavors()))
                raise NotFound(
                    f"flavor {name!r} (size={size}) does not exist",
                    f"use one of: {known}" if known else "ask the cloud's operator for flavors",
                )
            self._flavor_cache[name] = flavor
        return self._flavor_cache[name]

    def image(self) -> Any:
        """The image, by name (the newest active one of that name) or by id."""
        if self._image is None:
            image = newest_active(self.conn.image.images(name=self.cfg.image))
            if image is None:
                image = find(self.conn.image.find_image, self.cfg.image)
                if image is None:
                    raise NotFound(
                        f"image {self.cfg.image!r} does not exist",
                        "set gdl:openstack:image to an image this project can see "
                        "(openstack image list)",
                    )
                if image.status != "active":
                    raise ConfigError(
                        f"image {self.cfg.image!r} is {image.status}, not active",
                        "wait for its upload to finish or choose an active image",
                    )
            self._image = image
        return self._image

    def key_name(self) -> str | None:
        """The key pair given SSH access: ``key_name`` when set, checked; else none."""
        if not self.cfg.key_name:
            return None
        if find(self.conn.compute.find_keypair, self.cfg.key_name) is None:
            raise NotFound(
                f"key pair {self.cfg.key_name!r} does not exist",
                "create it (openstack keypair create) or fix gdl:openstack:key_name",
            )
        return self.cfg.key_name

    def master_group(self) -> Any | None:
        """The master's own security group (``master_security_group``), when set."""
        if not self.cfg.master_security_group:
            return None
        group = self._find_one(
            "security_group", self.cfg.master_security_group, project_id=self.project_id()
        )
        if group is None:
            raise NotFound(
                f"security group {self.cfg.master_security_group!r} does not exist in this project",
                "give the security group of the master's instance (name or id), "
                "or fix gdl:openstack:master_security_group",
            )
        return group

    def _find_one(self, kind: str, name_or_id: str, **query: Any) -> Any | None:
        """A Neutron ``kind`` by name or id; a clear error when a name means several."""
        finder = getattr(self.conn.network, f"find_{kind}")
        try:
            return find(lambda value, **kw: finder(value, **kw, **query), name_or_id)
        except os_exceptions.DuplicateResource:
            raise ConfigError(
                f"{kind} name {name_or_id!r} is shared by several {kind}s",
                f"give the {kind}'s id instead of its name",
            ) from None

    def owned_servers(self, app: str | None = None, env: str | None = None) -> list[Any]:
        """Servers whose metadata marks them gdl's, optionally of one app and environment.

        A soft-deleted server (a cloud with deferred delete) counts as deleted.
        """
        found = []
        for server in self.conn.compute.servers(details=True):
            marks = server.metadata or {}
            if naming.MARK_APP not in marks or naming.MARK_ENV not in marks:
                continue
            if server.status in GONE:
                continue
            if app is not None and marks[naming.MARK_APP] != app:
                continue
            if env is not None and marks[naming.MARK_ENV] != env:
                continue
            found.append(server)
        return found

    def owned(self, kind: str, **query: Any) -> list[Any]:
        """This project's Neutron resources of ``kind`` matching ``query``.

        Always scoped to the connection's project: with admin credentials Neutron lists
        every project's resources, and names, descriptions and tags are not per project,
        so another project's environment of the same name would match.
        """
        lister = getattr(self.conn.network, kind)
        return list(lister(project_id=self.project_id(), **query))

    def tagged(self, kind: str, marks: dict[str, str], **query: Any) -> list[Any]:
        """This project's Neutron resources of ``kind`` carrying every one of ``marks``."""
        return self.owned(kind, tags=",".join(tags_of(marks)), **query)

    def set_tags(self, resource: Any, marks: dict[str, str]) -> Any:
        return retry(lambda: self.conn.network.set_tags(resource, tags_of(marks)))
