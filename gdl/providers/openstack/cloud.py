"""The configured cloud: one connection, made when first needed, and the shared lookups."""

from __future__ import annotations

from typing import Any

import openstack

from gdl import naming
from gdl.errors import ConfigError, NotFound
from gdl.providers.openstack.api import connect, find, retry, translate
from gdl.providers.openstack.marks import tags_of
from gdl.providers.openstack.settings import OpenStackSettings


class Cloud:
    """The cloud ``cfg`` names, and what gdl looks up in it."""

    def __init__(
        self, cfg: OpenStackSettings, connection: openstack.connection.Connection | None = None
    ) -> None:
        self.cfg = cfg
        self._connection = connection
        self._flavor_cache: dict[str, Any] = {}

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
        network = find(self.conn.network.find_network, self.cfg.network)
        if network is None:
            raise NotFound(
                f"network {self.cfg.network!r} does not exist in this project",
                "set gdl:openstack:network to an existing network (openstack network list)",
            )
        return network

    def subnet(self, network: Any) -> Any:
        for subnet in self.conn.network.subnets(network_id=network.id):
            if subnet.ip_version == 4:
                return subnet
        raise NotFound(
            f"network {network.name!r} has no IPv4 subnet",
            "add an IPv4 subnet to it or choose another network",
        )

    def external_network(self, network: Any) -> Any | None:
        """Where floating IPs come from; None when the servers' network is external itself."""
        if network.is_router_external:
            return None
        if self.cfg.external_network:
            external = find(self.conn.network.find_network, self.cfg.external_network)
            if external is None:
                raise NotFound(
                    f"external network {self.cfg.external_network!r} does not exist",
                    "set gdl:openstack:external_network to a network with router:external",
                )
            return external
        externals = list(self.conn.network.networks(is_router_external=True))
        if len(externals) == 1:
            return externals[0]
        raise ConfigError(
            f"network {network.name!r} is not external and "
            f"{'no' if not externals else len(externals)} external networks exist",
            "set gdl:openstack:external_network to the one floating IPs come from",
        )

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
        image = find(self.conn.image.find_image, self.cfg.image)
        if image is None:
            raise NotFound(
                f"image {self.cfg.image!r} does not exist",
                "set gdl:openstack:image to an image this project can see (openstack image list)",
            )
        return image

    def key_name(self) -> str:
        if self.cfg.key_name:
            if find(self.conn.compute.find_keypair, self.cfg.key_name) is None:
                raise NotFound(
                    f"key pair {self.cfg.key_name!r} does not exist",
                    "create it (openstack keypair create) or fix gdl:openstack:key_name",
                )
            return self.cfg.key_name
        first = next(iter(self.conn.compute.keypairs()), None)
        if first is None:
            raise NotFound(
                "the OpenStack account has no key pair",
                "create one (openstack keypair create --public-key ~/.ssh/id_ed25519.pub ops) "
                "or set gdl:openstack:key_name",
            )
        return first.name

    def owned_servers(self, app: str | None = None, env: str | None = None) -> list[Any]:
        """Servers whose metadata marks them gdl's, optionally of one app and environment."""
        found = []
        for server in self.conn.compute.servers(details=True):
            marks = server.metadata or {}
            if naming.MARK_APP not in marks or naming.MARK_ENV not in marks:
                continue
            if app is not None and marks[naming.MARK_APP] != app:
                continue
            if env is not None and marks[naming.MARK_ENV] != env:
                continue
            found.append(server)
        return found

    def tagged(self, kind: str, marks: dict[str, str], **query: Any) -> list[Any]:
        """Neutron resources of ``kind`` carrying every one of ``marks``."""
        lister = getattr(self.conn.network, kind)
        return list(lister(tags=",".join(tags_of(marks)), **query))

    def set_tags(self, resource: Any, marks: dict[str, str]) -> Any:
        return retry(lambda: self.conn.network.set_tags(resource, tags_of(marks)))
