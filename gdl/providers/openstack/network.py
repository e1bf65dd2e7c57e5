"""The environment's network parts on OpenStack, found, made and removed.

An environment (app, env) has two security groups and two server groups, one of each per
role, and a VIP port whose fixed address keepalived moves between the load balancers (its
tags hold the VRRP router id), with a floating IP when the network is not external.
Concurrent builders (salt-cloud makes servers in parallel processes) end up sharing one
set: each keeps the oldest of any twins.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openstack
from keystoneauth1 import discover
from openstack import exceptions as os_exceptions

from gdl import naming
from gdl.errors import CapacityError, LockHeld
from gdl.lock import lock_within
from gdl.providers.base import EnvNetwork
from gdl.providers.openstack.api import create_once, retry
from gdl.providers.openstack.cloud import Cloud
from gdl.providers.openstack.marks import (
    MARK_VRID,
    ROLE_VIP,
    group_description,
    group_name,
    keeper,
    keeper_or_none,
    marks_of,
    next_router_id,
    ours_by_description,
    tags_of,
    vip_description,
    vip_port_name,
)
from gdl.providers.openstack.security import (
    ensure_master_rules,
    ensure_rules,
    remove_master_rules,
)

# soft-anti-affinity came with compute API 2.15; every cloud since Mitaka has it.
SOFT_ANTI_AFFINITY_VERSION = (2, 15)
HARD, SOFT = "anti-affinity", "soft-anti-affinity"


def policy_of(group: Any) -> str | None:
    """A server group's policy (``policy`` from compute API 2.64, ``policies`` before)."""
    return group.policy or (group.policies or [None])[0]


@contextlib.contextmanager
def parts_lock(lock_dir: Path | None, app: str, env: str, timeout: float = 300) -> Iterator[None]:
    """Serialise the making of one environment's parts on this master.

    salt-cloud makes servers in parallel processes, and each makes sure the parts exist;
    without this, two could each make a VIP port.  (An flock: it dies with its holder.)
    """
    if lock_dir is None:
        yield
        return
    lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = lock_dir / f"openstack-parts-{naming.env_id(app, env)}.lock"
    with open(path, "a") as handle:
        lock_within(
            handle,
            timeout,
            lambda: LockHeld(
                f"another process has been making the parts of "
                f"{naming.env_id(app, env)} for {timeout:.0f} s",
                "wait for it to finish, then run this again",
            ),
        )
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass
class EnvParts:
    """The environment's OpenStack resources ``ensure_env`` makes, as found in the cloud."""

    app: str
    env: str
    network: Any
    subnet: Any
    security_groups: dict[str, Any] = field(default_factory=dict)  # role -> SG
    server_groups: dict[str, Any] = field(default_factory=dict)  # role -> server group
    vip_port: Any = None
    floating_ip: Any = None

    @property
    def vip(self) -> str:
        return self.vip_port.fixed_ips[0]["ip_address"]

    @property
    def router_id(self) -> int:
        return int(marks_of(self.vip_port.tags)[MARK_VRID])

    def env_network(self, master_address: str) -> EnvNetwork:
        """What the Provider interface reports of these parts."""
        public = self.floating_ip.floating_ip_address if self.floating_ip else self.vip
        return EnvNetwork(
            vip=self.vip,
            public_address=public,
            cidr=self.subnet.cidr,
            router_id=self.router_id,
            master_address=master_address,
        )


class Parts:
    """Finds, makes and removes environments' network parts on ``cloud``."""

    def __init__(self, cloud: Cloud, lock_dir: Path | None = None) -> None:
        self.cloud = cloud
        self.lock_dir = lock_dir

    @property
    def conn(self) -> openstack.connection.Connection:
        return self.cloud.conn

    def find(self, app: str, env: str, network: Any) -> EnvParts | None:
        marks = naming.ownership(app, env)
        parts = EnvParts(app=app, env=env, network=network, subnet=self.cloud.subnet(network))
        groups = self.cloud.tagged("security_groups", marks)
        for role in naming.ROLES:
            of_role = [g for g in groups if marks_of(g.tags).get(naming.MARK_ROLE) == role]
            if of_role:
                parts.security_groups[role] = keeper(of_role)
        server_groups = list(self.conn.compute.server_groups())
        for role in naming.ROLES:
            named = [g for g in server_groups if g.name == group_name(app, env, role)]
            if named:
                parts.server_groups[role] = keeper(named)
        vip_marks = {**marks, naming.MARK_ROLE: ROLE_VIP}
        vip_ports = self.cloud.tagged("ports", vip_marks, network_id=network.id)
        parts.vip_port = keeper(vip_ports) if vip_ports else None
        if parts.vip_port is not None:
            fips = self.cloud.tagged("ips", vip_marks, port_id=parts.vip_port.id)
            parts.floating_ip = keeper(fips) if fips else None
        if not (parts.security_groups or parts.server_groups or parts.vip_port):
            return None
        return parts

    def ensure(self, app: str, env: str) -> EnvParts:
        with parts_lock(self.lock_dir, app, env):
            return self._ensure_locked(app, env)

    def _ensure_locked(self, app: str, env: str) -> EnvParts:
        network = self.cloud.network()
        parts = self.find(app, env, network) or EnvParts(
            app=app, env=env, network=network, subnet=self.cloud.subnet(network)
        )
        for role in naming.ROLES:
            if role not in parts.security_groups:
                parts.security_groups[role] = self._make_security_group(app, env, role)
        master_group = self.cloud.master_group()
        ensure_rules(
            self.conn,
            parts.security_groups,
            self.cloud.cfg.master_source_cidr,
            master_group.id if master_group is not None else None,
        )
        if master_group is not None:
            ensure_master_rules(self.conn, master_group, parts.security_groups)
        for role in naming.ROLES:
            if role not in parts.server_groups:
                parts.server_groups[role] = self._make_server_group(app, env, role)
        if parts.vip_port is None:
            parts.vip_port = self._make_vip_port(app, env, network, parts)
        if parts.floating_ip is None:
            external = self.cloud.external_network(network)
            if external is not None:
                parts.floating_ip = self.make_floating_ip(
                    external,
                    parts.vip_port,
                    {**naming.ownership(app, env), naming.MARK_ROLE: ROLE_VIP},
                    vip_description(app, env),
                )
        return parts

    def remove(self, app: str, env: str) -> None:
        """Remove the environment's floating IPs, ports, security groups and server groups.

        Its servers are gone first (their ports would hold the groups).
        """
        marks = naming.ownership(app, env)
        # By tags, and by description for what a build that died left untagged.
        fips = {f.id: f for f in self.cloud.tagged("ips", marks)}
        fips.update((f.id, f) for f in self.cloud.owned("ips") if ours_by_description(f, app, env))
        for fip in fips.values():
            retry(lambda fip=fip: self.conn.network.delete_ip(fip, ignore_missing=True), True)
        ports = {p.id: p for p in self.cloud.tagged("ports", marks)}
        network = self.cloud.network_or_none()
        if network is not None:
            ports.update(
                (p.id, p)
                for p in self.cloud.owned("ports", network_id=network.id)
                if ours_by_description(p, app, env)
            )
        for port in ports.values():
            retry(lambda port=port: self.conn.network.delete_port(port, ignore_missing=True), True)
        groups = {g.id: g for g in self.cloud.tagged("security_groups", marks)}
        for role in naming.ROLES:
            groups.update(
                (g.id, g)
                for g in self.cloud.owned(
                    "security_groups",
                    name=group_name(app, env, role),
                    description=group_description(app, env, role),
                )
            )
        # Neutron would drop them with the groups; by hand, before, so none outlives them
        # when a group cannot go yet.
        remove_master_rules(self.conn, groups)
        for group in groups.values():
            # A port being deleted may still hold the group for a moment: 409, retried.
            retry(
                lambda group=group: self.conn.network.delete_security_group(
                    group, ignore_missing=True
                ),
                True,
            )
        names = {group_name(app, env, role) for role in naming.ROLES}
        for group in list(self.conn.compute.server_groups()):
            if group.name in names:
                retry(
                    lambda group=group: self.conn.compute.delete_server_group(
                        group, ignore_missing=True
                    )
                )

    def _settle(
        self, made: Any, same: list[Any], marks: dict[str, str], delete: Callable[[Any], Any]
    ) -> Any:
        """Of ``same`` (``made`` and its twins by name and description), keep the oldest.

        Two builders making an environment's parts at once (salt-cloud creates servers
        in parallel) each find the other's twin here and keep the same one; a twin left
        untagged by a build that died is adopted and tagged.
        """
        winner = keeper([made, *same]) if same else made
        if winner.id != made.id:
            retry(lambda: delete(made), True)
        if set(tags_of(marks)) - set(winner.tags or ()):
            self.cloud.set_tags(winner, marks)
        return winner

    def _make_security_group(self, app: str, env: str, role: str) -> Any:
        marks = naming.ownership(app, env, role)
        name, description = group_name(app, env, role), group_description(app, env, role)

        def twins() -> list[Any]:
            return self.cloud.owned("security_groups", name=name, description=description)

        # One left untagged by a build that died is taken as it is, not made again: a
        # twin made in the same second could otherwise be the one kept, as Neutron's
        # creation times are whole seconds.
        group = keeper_or_none(twins()) or create_once(
            lambda: self.conn.network.create_security_group(name=name, description=description),
            lambda: keeper_or_none(twins()),
        )
        self.cloud.set_tags(group, marks)
        same = twins()
        winner = self._settle(
            group,
            same,
            marks,
            lambda g: self.conn.network.delete_security_group(g, ignore_missing=True),
        )
        return self.conn.network.get_security_group(winner.id)

    def soft_anti_affinity(self) -> bool:
        version = self.conn.compute.get_endpoint_data().max_microversion
        return bool(
            version and discover.normalize_version_number(version) >= SOFT_ANTI_AFFINITY_VERSION
        )

    def _anti_affinity_policy(self, role: str) -> str:
        """The load balancer pair on different hosts; app servers apart where they can be."""
        if role == "lb" or not self.soft_anti_affinity():
            return HARD
        return SOFT

    def soften(self, app: str, env: str, role: str) -> Any:
        """Replace the role's hard anti-affinity group with a soft one; the new group.

        For a cloud that has no valid host for the next member.  Nova cannot change a
        group's policy nor move a server between groups: the members already running
        stay where they are, outside any group; the new group takes the servers made
        from now on.  Several builders falling back at once share one new group.
        """
        with parts_lock(self.lock_dir, app, env):
            name = group_name(app, env, role)
            named = [g for g in self.conn.compute.server_groups() if g.name == name]
            soft = [g for g in named if policy_of(g) == SOFT]
            if soft:
                return keeper(soft)
            for group in named:
                retry(
                    lambda group=group: self.conn.compute.delete_server_group(
                        group, ignore_missing=True
                    )
                )
            return self._make_server_group(app, env, role, SOFT)

    def _make_server_group(self, app: str, env: str, role: str, policy: str | None = None) -> Any:
        policy = policy or self._anti_affinity_policy(role)
        name = group_name(app, env, role)
        group = retry(lambda: self.conn.compute.create_server_group(name=name, policy=policy))
        same = [g for g in self.conn.compute.server_groups() if g.name == name]
        winner = keeper([group, *same])
        if winner.id != group.id:
            retry(lambda: self.conn.compute.delete_server_group(group, ignore_missing=True))
        return winner

    def _make_vip_port(self, app: str, env: str, network: Any, parts: EnvParts) -> Any:
        preferred = naming.preferred_router_id(app, env)
        taken = []
        # Every project's VIP ports on the network, not this project's alone: keepalived's
        # router ids must differ on the one network whoever owns the ports.
        for port in self.conn.network.ports(
            network_id=network.id, tags=f"{naming.MARK_ROLE}={ROLE_VIP}"
        ):
            value = marks_of(port.tags).get(MARK_VRID, "")
            if value.isdigit():
                taken.append(int(value))
        router_id = next_router_id(preferred, taken)
        if router_id is None:
            raise CapacityError(
                f"all 255 VRRP router ids on network {network.name!r} are taken",
                "destroy an environment on that network or use another network",
            )
        marks = {
            **naming.ownership(app, env),
            naming.MARK_ROLE: ROLE_VIP,
            MARK_VRID: str(router_id),
        }
        name, description = vip_port_name(app, env), vip_description(app, env)

        def twins() -> list[Any]:
            return self.cloud.owned(
                "ports", network_id=network.id, name=name, description=description
            )

        # One left by a build that died before tagging it is taken as it is (the parts
        # lock keeps this master's builders apart): made again, a twin made in the same
        # second could be the one kept, as Neutron's creation times are whole seconds.
        port = keeper_or_none(twins())
        if port is None:
            port = create_once(
                lambda: self.conn.network.create_port(
                    name=name,
                    network_id=network.id,
                    fixed_ips=[{"subnet_id": parts.subnet.id}],
                    security_group_ids=[parts.security_groups["lb"].id],
                    description=description,
                ),
                lambda: keeper_or_none(twins()),
            )
            # Tagged at once: other builders on the network see its router id as taken.
            self.cloud.set_tags(port, marks)
        winner = self._settle(
            port, twins(), {}, lambda p: self.conn.network.delete_port(p, ignore_missing=True)
        )
        current = self.conn.network.get_port(winner.id)
        # Never re-tag a port that has a router id: it may already be in use.
        if marks_of(current.tags).get(MARK_VRID):
            return current
        self.cloud.set_tags(winner, marks)
        return self.conn.network.get_port(winner.id)

    def make_floating_ip(
        self, external: Any, port: Any, marks: dict[str, str], description: str
    ) -> Any:
        try:
            fip = create_once(
                lambda: self.conn.network.create_ip(
                    floating_network_id=external.id, port_id=port.id, description=description
                ),
                lambda: keeper_or_none(
                    self.cloud.owned("ips", port_id=port.id, description=description)
                ),
            )
        except os_exceptions.ConflictException:
            # One floating IP per fixed IP: another builder's is there already.
            existing = self.cloud.owned("ips", port_id=port.id, description=description)
            if not existing:
                raise
            fip = keeper(existing)
        self.cloud.set_tags(fip, marks)
        same = self.cloud.owned("ips", port_id=port.id, description=description)
        winner = self._settle(
            fip, same, marks, lambda f: self.conn.network.delete_ip(f, ignore_missing=True)
        )
        return self.conn.network.get_ip(winner.id)
