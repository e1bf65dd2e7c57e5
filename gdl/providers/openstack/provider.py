"""The OpenStack provider: the Provider verbs and salt-cloud's listings, over this package's parts.

Each verb reports a failed API call as one GdlError in the operator's words; the work is done
by :class:`~gdl.providers.openstack.cloud.Cloud` (connection and lookups),
:class:`~gdl.providers.openstack.network.Parts` (an environment's network parts),
:class:`~gdl.providers.openstack.servers.Servers` and
:func:`~gdl.providers.openstack.check.check_request`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import openstack

from gdl import naming, salt_wheelhouse, userdata
from gdl.config import Settings
from gdl.errors import GdlError
from gdl.providers.base import (
    EnvNetwork,
    Progress,
    Provider,
    Server,
    ServerRequest,
    no_progress,
)
from gdl.providers.openstack.api import API_ERRORS, redact_user_data_in_logs, translate
from gdl.providers.openstack.check import check_request
from gdl.providers.openstack.cloud import Cloud
from gdl.providers.openstack.marks import ROLE_VIP, group_name, keeper, marks_of
from gdl.providers.openstack.network import SOFT, Parts, policy_of
from gdl.providers.openstack.servers import Servers
from gdl.providers.openstack.settings import OpenStackSettings
from gdl.spec import EnvSpec

log = logging.getLogger(__name__)


class OpenStackProvider(Provider):
    """Servers on an OpenStack cloud, through openstacksdk."""

    name = "openstack"

    def __init__(
        self,
        cfg: OpenStackSettings,
        connection: openstack.connection.Connection | None = None,
        lock_dir: Path | None = None,
        salt_source: Callable[[Progress], userdata.SaltSource] | None = None,
    ) -> None:
        self.cfg = cfg
        # Where first boot gets Salt (the master's package source, made ready on each call).
        self.salt_source = salt_source
        self.minion_timeout = cfg.minion_timeout
        self.server_timeout = cfg.server_timeout
        self.lock_dir = lock_dir
        redact_user_data_in_logs()
        self.cloud = Cloud(cfg, connection)
        self.parts = Parts(self.cloud, lock_dir)
        self.servers = Servers(self.cloud, self.parts)

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenStackProvider:
        cfg = OpenStackSettings.from_mapping(settings.openstack)

        def salt_source(progress: Progress) -> userdata.SaltSource:
            return salt_wheelhouse.first_boot_source(
                settings, cfg.master_address, cfg.pip_index_url, cfg.http_proxy, progress
            )

        # An image with Salt installs nothing at first boot: no wheelhouse to build for it.
        chosen = None if cfg.salt_in_image else salt_source
        return cls(cfg, lock_dir=settings.lock_dir, salt_source=chosen)

    @property
    def conn(self) -> openstack.connection.Connection:
        return self.cloud.conn

    # -- listings for salt-cloud ------------------------------------------------------------

    def get_server(self, name: str) -> Server | None:
        """The server gdl made under ``name``, or None."""
        return self.servers.get(name)

    def images(self) -> dict[str, dict[str, Any]]:
        """The images the project can boot, by name."""
        try:
            return {
                image.name or image.id: {
                    "id": image.id,
                    "name": image.name,
                    "status": image.status,
                    "visibility": image.visibility,
                }
                for image in self.conn.image.images()
            }
        except API_ERRORS as error:
            raise translate(error, "listing images") from None

    def flavors(self) -> dict[str, dict[str, Any]]:
        """The flavors the project can use, by name."""
        try:
            return {
                flavor.name: {
                    "id": flavor.id,
                    "name": flavor.name,
                    "vcpus": flavor.vcpus,
                    "ram": flavor.ram,
                    "disk": flavor.disk,
                }
                for flavor in self.conn.compute.flavors()
            }
        except API_ERRORS as error:
            raise translate(error, "listing flavors") from None

    def zones(self) -> dict[str, dict[str, Any]]:
        """The compute availability zones, by name."""
        try:
            return {
                zone.name: {
                    "name": zone.name,
                    "available": bool((zone.state or {}).get("available")),
                }
                for zone in self.conn.compute.availability_zones()
            }
        except API_ERRORS as error:
            raise translate(error, "listing availability zones") from None

    def attach_floating_ip(self, name: str) -> str:
        """Give server ``name`` a floating IP of its own (tagged to go with it); its address."""
        return self.servers.attach_floating_ip(name)

    def console_tail(self, name: str, lines: int = 20) -> list[str]:
        """The last lines of server ``name``'s console log, as Nova keeps it."""
        try:
            server = next((s for s in self.cloud.owned_servers() if s.name == name), None)
            if server is None:
                return []
            output = self.conn.compute.get_server_console_output(server, length=lines)
        except (*API_ERRORS, GdlError) as error:
            # Evidence for another error: its absence must not replace that error.
            log.info("no console output of %s: %s", name, error)
            return []
        return str((output or {}).get("output") or "").splitlines()[-lines:]

    # -- the Provider verbs -----------------------------------------------------------------

    def sizes(self) -> list[str]:
        try:
            return sorted(f.name for f in self.conn.compute.flavors())
        except API_ERRORS as error:
            raise translate(error, "listing flavors") from None

    def check(self, spec: EnvSpec) -> None:
        check_request(self.cloud, self.parts, spec)

    def find_env(self, app: str, env: str) -> EnvNetwork | None:
        try:
            network = self.cloud.network()
            parts = self.parts.find(app, env, network)
        except API_ERRORS as error:
            raise translate(error, f"looking up {naming.env_id(app, env)}") from None
        if parts is None or parts.vip_port is None:
            return None
        return parts.env_network(self.cfg.master_address)

    def ensure_env(self, app: str, env: str) -> EnvNetwork:
        try:
            return self.parts.ensure(app, env).env_network(self.cfg.master_address)
        except API_ERRORS as error:
            raise translate(
                error, f"making the network parts of {naming.env_id(app, env)}"
            ) from None

    def create_servers(
        self,
        requests: Sequence[ServerRequest],
        timeout: float | None = None,
        progress: Progress = no_progress,
    ) -> list[Server]:
        source = self.salt_source(progress) if self.salt_source and requests else None
        return self.servers.create(requests, timeout, progress, source)

    def list_servers(self, app: str | None = None, env: str | None = None) -> list[Server]:
        return self.servers.find_all(app, env)

    def delete_servers(
        self, names: Iterable[str], timeout: float = 300, progress: Progress = no_progress
    ) -> list[str]:
        return self.servers.delete(names, timeout, progress)

    def teardown_env(self, app: str, env: str) -> None:
        """Remove the environment's servers still there, floating IPs, ports, groups.

        Found by tags, and by the names and descriptions gdl gives, so parts a build left
        untagged when it died go too; other environments' resources are never touched.
        """
        env_id = naming.env_id(app, env)
        try:
            leftovers = self.cloud.owned_servers(app, env)
            if leftovers:
                self.delete_servers([s.name for s in leftovers])
            self.parts.remove(app, env)
        except API_ERRORS as error:
            raise translate(error, f"removing the network parts of {env_id}") from None

    def placement_warnings(self, app: str, env: str) -> list[str]:
        """The load balancers sharing a host, or kept apart only where the cloud can."""
        warnings = []
        lbs = [s for s in self.list_servers(app, env) if s.role == "lb"]
        hosts = {s.extra.get("host_id") for s in lbs}
        if len(lbs) == 2 and len(hosts) == 1 and hosts != {None}:
            warnings.append(
                f"{lbs[0].name} and {lbs[1].name} run on the same host: "
                "its failure takes both load balancers, and the VIP, down"
            )
        try:
            name = group_name(app, env, "lb")
            groups = [g for g in self.conn.compute.server_groups() if g.name == name]
        except API_ERRORS as error:
            raise translate(
                error, f"reading the server groups of {naming.env_id(app, env)}"
            ) from None
        if groups and policy_of(keeper(groups)) == SOFT:
            warnings.append(
                f"the load balancers are placed with soft-anti-affinity (server group {name}), "
                "not the hard anti-affinity gdl asks for first: the cloud had no valid host "
                "to keep them apart, and they may share one"
            )
        return warnings

    def list_envs(self) -> list[tuple[str, str]]:
        envs = set(super().list_envs())
        for port in self.cloud.owned("ports", tags=f"{naming.MARK_ROLE}={ROLE_VIP}"):
            marks = marks_of(port.tags)
            if naming.MARK_APP in marks and naming.MARK_ENV in marks:
                envs.add((marks[naming.MARK_APP], marks[naming.MARK_ENV]))
        return sorted(envs)
