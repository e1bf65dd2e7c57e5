"""Servers on OpenStack: made in parallel, waited for, listed and deleted with their ports.

Each server has one port gdl makes (a load balancer's lists the VIP as an allowed address
pair, so Neutron's port security lets it answer for the VIP); servers carry the ownership
marks as metadata.
"""

from __future__ import annotations

import base64
import logging
import re
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openstack

from gdl import naming, userdata
from gdl.errors import NotFound, ProviderError
from gdl.providers.base import Progress, Server, ServerRequest, no_progress
from gdl.providers.openstack.api import (
    API_ERRORS,
    create_once,
    find,
    poll_delays,
    retry,
    translate,
)
from gdl.providers.openstack.boot import boot_options
from gdl.providers.openstack.cloud import Cloud
from gdl.providers.openstack.marks import MARK_SERVER, MARK_SIZE, marks_of, server_description
from gdl.providers.openstack.network import HARD, EnvParts, Parts, policy_of
from gdl.providers.openstack.records import GONE, TRANSITIONAL, server_record

log = logging.getLogger(__name__)

DELETE_TIMEOUT = 300.0
# Nova's faults when its scheduler finds no host for a server: at once, or after the host
# it chose refused it (a late anti-affinity check) and no other was left.
NO_VALID_HOST = re.compile(r"No valid host was found|Exhausted all hosts available")


class NoValidHost(ProviderError):
    """Nova found no host for the server (it was removed)."""


class Servers:
    """Makes, finds and deletes gdl's servers on ``cloud``, in the parts ``parts`` makes."""

    def __init__(self, cloud: Cloud, parts: Parts) -> None:
        self.cloud = cloud
        self.parts = parts

    @property
    def conn(self) -> openstack.connection.Connection:
        return self.cloud.conn

    def create(
        self,
        requests: Sequence[ServerRequest],
        timeout: float | None = None,
        progress: Progress = no_progress,
        source: userdata.SaltSource | None = None,
    ) -> list[Server]:
        if not requests:
            return []
        if timeout is None:
            timeout = self.cloud.cfg.server_timeout
        try:
            envs = {(r.app, r.env): self.parts.ensure(r.app, r.env) for r in requests}
            image = self.cloud.image()
            key_name = self.cloud.key_name()
            flavors = {r.size: self.cloud.flavor(r.size) for r in requests}
        except API_ERRORS as error:
            raise translate(error, "preparing servers") from None
        deadline = time.monotonic() + timeout

        def make(request: ServerRequest) -> Server:
            return self._create_one(
                request,
                envs[(request.app, request.env)],
                image,
                flavors[request.size],
                key_name,
                deadline,
                progress,
                source,
            )

        made: list[Server] = []
        failed: list[str] = []
        with ThreadPoolExecutor(max_workers=min(8, len(requests))) as pool:
            futures = [(r, pool.submit(make, r)) for r in requests]
            for request, future in futures:
                try:
                    made.append(future.result())
                except Exception as error:
                    reason = translate(error, f"making {request.name}")
                    failed.append(f"{request.name}: {reason.problem}")
        if failed:
            raise ProviderError(
                f"could not make {'; '.join(failed)}",
                "fix the cause and run the build again: servers already made are kept",
            )
        return made

    def find_all(self, app: str | None = None, env: str | None = None) -> list[Server]:
        try:
            servers = self.cloud.owned_servers(app, env)
            floating = self.floating_addresses() if servers else {}
            network = self.network_name() if servers else None
        except API_ERRORS as error:
            raise translate(error, "listing servers") from None
        return sorted((server_record(s, network, floating) for s in servers), key=lambda s: s.name)

    def network_name(self) -> str | None:
        """The name Nova lists the servers' addresses under (the setting may be an id)."""
        network = self.cloud.network_or_none()
        return network.name if network is not None else None

    def get(self, name: str) -> Server | None:
        """The server gdl made under ``name``, or None."""
        try:
            for server in self.cloud.owned_servers():
                if server.name == name:
                    return server_record(server, self.network_name(), self.floating_addresses())
        except API_ERRORS as error:
            raise translate(error, f"looking up {name}") from None
        return None

    def delete(
        self, names: Iterable[str], timeout: float = 300, progress: Progress = no_progress
    ) -> list[str]:
        wanted = list(dict.fromkeys(names))
        if not wanted:
            return []
        try:
            owned = {s.name: s for s in self.cloud.owned_servers() if s.name in wanted}
        except API_ERRORS as error:
            raise translate(error, "listing servers") from None
        deadline = time.monotonic() + timeout
        deleted, failed = [], []
        with ThreadPoolExecutor(max_workers=min(8, len(wanted))) as pool:
            futures = [
                (n, pool.submit(self._delete_one, n, owned.get(n), deadline)) for n in wanted
            ]
            for name, future in futures:
                try:
                    if future.result():
                        deleted.append(name)
                        progress(f"{name} deleted")
                except Exception as error:
                    failed.append(f"{name}: {translate(error, f'deleting {name}').problem}")
        if failed:
            raise ProviderError(
                f"could not delete {'; '.join(failed)}", "run the same command again"
            )
        return deleted

    def attach_floating_ip(self, name: str) -> str:
        """Give server ``name`` a floating IP of its own (tagged to go with it); its address."""
        parsed = naming.parse_server_name(name)
        if parsed is None:
            raise NotFound(f"{name!r} is not a gdl server name", "use <role>-<index>-<app>-<env>")
        marks = {**naming.ownership(parsed.app, parsed.env), MARK_SERVER: name}
        try:
            existing = self.cloud.tagged("ips", marks)
            if existing:
                return existing[0].floating_ip_address
            network = self.cloud.network()
            external = self.cloud.external_network(network)
            if external is None:
                why = (
                    "gdl:openstack:floating_ip is false"
                    if not self.cloud.cfg.floating_ip
                    else f"network {network.name!r} is external"
                )
                raise ProviderError(
                    f"{why}: {name} gets no floating IP", "drop floating_ip from the profile"
                )
            ports = self.cloud.tagged("ports", marks, network_id=network.id)
            if not ports:
                raise NotFound(f"server {name} has no gdl port", "create the server first")
            return self.parts.make_floating_ip(
                external, ports[0], marks, server_description(name)
            ).floating_ip_address
        except API_ERRORS as error:
            raise translate(error, f"attaching a floating IP to {name}") from None

    def port_for(self, request: ServerRequest, parts: EnvParts) -> Any:
        marks = {
            **naming.ownership(request.app, request.env, request.role),
            MARK_SERVER: request.name,
        }
        found = self.cloud.tagged("ports", marks, network_id=parts.network.id)
        if found:
            return found[0]
        pairs = [{"ip_address": f"{parts.vip}/32"}] if request.role == "lb" else []
        described = {"name": request.name, "description": server_description(request.name)}
        port = create_once(
            lambda: self.conn.network.create_port(
                network_id=parts.network.id,
                fixed_ips=[{"subnet_id": parts.subnet.id}],
                security_group_ids=[parts.security_groups[request.role].id],
                allowed_address_pairs=pairs,
                **described,
            ),
            lambda: next(
                iter(self.cloud.owned("ports", network_id=parts.network.id, **described)), None
            ),
        )
        self.cloud.set_tags(port, marks)
        return port

    def _create_one(
        self,
        request: ServerRequest,
        parts: EnvParts,
        image: Any,
        flavor: Any,
        key_name: str | None,
        deadline: float,
        progress: Progress,
        source: userdata.SaltSource | None = None,
    ) -> Server:
        existing = [
            s for s in self.cloud.owned_servers(request.app, request.env) if s.name == request.name
        ]
        server = existing[0] if existing else None
        if server is not None and server.status == "ERROR":
            self._delete_one(request.name, server, deadline)
            server = None
        try:
            server = self._boot(request, parts, image, flavor, key_name, server, deadline, source)
        except NoValidHost as error:
            group = parts.server_groups[request.role]
            if policy_of(group) != HARD or not self.parts.soft_anti_affinity():
                raise
            # The cloud has no host apart from the other members': the failed server is
            # gone (see _wait_active); it is made again where the cloud can place it.
            parts.server_groups[request.role] = self.parts.soften(
                request.app, request.env, request.role
            )
            log.warning("%s; making it again with soft-anti-affinity", error.problem)
            server = self._boot(request, parts, image, flavor, key_name, None, deadline, source)
        progress(f"{request.name} is running on OpenStack")
        return server_record(server, parts.network.name)

    def _boot(
        self,
        request: ServerRequest,
        parts: EnvParts,
        image: Any,
        flavor: Any,
        key_name: str | None,
        server: Any | None,
        deadline: float,
        source: userdata.SaltSource | None = None,
    ) -> Any:
        """Make the server unless ``server`` is it, and wait until it is ACTIVE."""
        if server is None:
            port = self.port_for(request, parts)
            metadata = {
                **naming.ownership(request.app, request.env, request.role),
                MARK_SIZE: request.size,
            }
            document = userdata.render(
                request,
                self.cloud.cfg.minion_packages,
                master_port=self.cloud.cfg.master_port,
                publish_port=self.cloud.cfg.publish_port,
                source=source,
            )
            encoded = base64.b64encode(document.encode()).decode()
            options = boot_options(self.cloud.cfg, image, flavor, key_name)
            server = create_once(
                lambda: self.conn.compute.create_server(
                    name=request.name,
                    networks=[{"port": port.id}],
                    metadata=metadata,
                    user_data=encoded,
                    scheduler_hints={"group": parts.server_groups[request.role].id},
                    **options,
                ),
                lambda: next(
                    (
                        s
                        for s in self.cloud.owned_servers(request.app, request.env)
                        if s.name == request.name
                    ),
                    None,
                ),
            )
            log.info("creating server %s (%s)", request.name, server.id)
        return self._wait_active(request.name, server, deadline)

    def _wait_active(self, name: str, server: Any, deadline: float) -> Any:
        delays = poll_delays()
        while True:
            server = retry(lambda server=server: self.conn.compute.get_server(server.id))
            status = server.status or ""
            if status == "ACTIVE":
                return server
            if status == "ERROR":
                fault = " ".join(str((server.fault or {}).get("message", "no fault given")).split())
                self._delete_one(name, server, deadline + DELETE_TIMEOUT)
                error = NoValidHost if NO_VALID_HOST.search(fault) else ProviderError
                raise error(
                    f"server {name} went to ERROR ({fault}); it was removed",
                    "fix the cause (flavor, image, quota, capacity) and run the build again",
                )
            if status not in TRANSITIONAL:
                # SHELVED, RESCUE, UNKNOWN, ...: Nova will not make it ACTIVE on its own.
                raise ProviderError(
                    f"server {name} is {status or 'without a state'}, not ACTIVE, "
                    "and Nova will not make it ACTIVE on its own",
                    f"bring it back (openstack server show {name}) or delete it, "
                    "then run the build again",
                )
            if time.monotonic() >= deadline:
                raise ProviderError(
                    f"server {name} is still {status} after the timeout",
                    "check the cloud, then run the build again (it keeps waiting for it)",
                )
            time.sleep(min(next(delays), max(0.0, deadline - time.monotonic()) + 0.1))

    def _delete_one(self, name: str, server: Any | None, deadline: float) -> bool:
        """Delete a server and the ports and floating IPs gdl made for it; True if it existed."""
        if server is not None:
            retry(lambda: self.conn.compute.delete_server(server, ignore_missing=True), True)
            delays = poll_delays()
            while True:
                left = find(self.conn.compute.find_server, server.id)
                if left is None or left.status in GONE:
                    break
                if time.monotonic() >= deadline:
                    raise ProviderError(
                        f"server {name} is still being deleted after the timeout",
                        "run the same command again",
                    )
                time.sleep(next(delays))
        marks = {MARK_SERVER: name}
        parsed = naming.parse_server_name(name)
        if parsed is not None:
            marks.update(naming.ownership(parsed.app, parsed.env))
        # By tags, and by description for what a build that died left untagged.
        described = server_description(name)
        fips = {f.id: f for f in self.cloud.tagged("ips", marks)}
        fips.update((f.id, f) for f in self.cloud.owned("ips", description=described))
        ports = {p.id: p for p in self.cloud.tagged("ports", marks)}
        ports.update((p.id, p) for p in self.cloud.owned("ports", name=name, description=described))
        for fip in fips.values():
            retry(lambda fip=fip: self.conn.network.delete_ip(fip, ignore_missing=True), True)
        for port in ports.values():
            # Nova detaches the port asynchronously: Neutron answers 409 until it has.
            retry(lambda port=port: self.conn.network.delete_port(port, ignore_missing=True), True)
        return server is not None

    def floating_addresses(self) -> dict[str, str]:
        """Server name -> the floating IP gdl gave that server (Nova lists it late, if ever)."""
        found = {}
        for fip in self.cloud.owned("ips"):
            name = marks_of(fip.tags).get(MARK_SERVER)
            if name:
                found[name] = fip.floating_ip_address
        return found
