"""A part a build that died left untagged is taken as it is, never made again beside it.

Neutron's creation times are whole seconds, so a twin made in the same second as the
orphan could win the oldest-first tie-break by its id and leave the orphan behind.
The rig cannot make two resources in one chosen second; here Neutron is a fake that
gives every resource the same time and each new one an id sorting first.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from gdl import naming
from gdl.providers.openstack.marks import (
    MARK_VRID,
    group_description,
    group_name,
    marks_of,
    tags_of,
    vip_description,
    vip_port_name,
)
from gdl.providers.openstack.network import EnvParts, Parts

SAME_SECOND = "2026-12-03T06:00:00Z"
APP, ENV = "blog", "dev"


class FakeNeutron:
    """Security groups and ports, listed by exact field values; creations recorded."""

    def __init__(self) -> None:
        self.items: dict[str, list[Any]] = {"security_groups": [], "ports": []}
        self.created: list[str] = []
        self.deleted: list[str] = []

    def _add(self, kind: str, ident: str, **fields: Any) -> Any:
        item = SimpleNamespace(id=ident, tags=[], created_at=SAME_SECOND, **fields)
        self.items[kind].append(item)
        return item

    def orphan(self, kind: str, **fields: Any) -> Any:
        return self._add(kind, "z-orphan", **fields)

    def _listing(self, kind: str, query: dict[str, Any]) -> list[Any]:
        query = {k: v for k, v in query.items() if k != "project_id"}
        wanted_tags = set(query.pop("tags", "").split(",")) - {""}
        return [
            item
            for item in self.items[kind]
            if all(getattr(item, k, None) == v for k, v in query.items())
            and wanted_tags <= set(item.tags)
        ]

    def security_groups(self, **query: Any) -> list[Any]:
        return self._listing("security_groups", query)

    def ports(self, **query: Any) -> list[Any]:
        return self._listing("ports", query)

    def create_security_group(self, **fields: Any) -> Any:
        self.created.append("security_group")
        return self._add("security_groups", "a-new", **fields)

    def create_port(self, **fields: Any) -> Any:
        self.created.append("port")
        fields.pop("fixed_ips", None)
        fields.pop("security_group_ids", None)
        return self._add("ports", "a-new", **fields)

    def delete_port(self, port: Any, ignore_missing: bool = True) -> None:
        self.deleted.append(port.id)
        self.items["ports"] = [p for p in self.items["ports"] if p.id != port.id]

    def delete_security_group(self, group: Any, ignore_missing: bool = True) -> None:
        self.deleted.append(group.id)
        groups = self.items["security_groups"]
        self.items["security_groups"] = [g for g in groups if g.id != group.id]

    def get_port(self, ident: str) -> Any:
        return next(p for p in self.items["ports"] if p.id == ident)

    def get_security_group(self, ident: str) -> Any:
        return next(g for g in self.items["security_groups"] if g.id == ident)

    def set_tags(self, resource: Any, tags: list[str]) -> None:
        resource.tags = list(tags)


def parts_on(neutron: FakeNeutron) -> Parts:
    cloud = SimpleNamespace(
        conn=SimpleNamespace(network=neutron),
        owned=lambda kind, **query: getattr(neutron, kind)(**query),
        set_tags=lambda resource, marks: neutron.set_tags(resource, tags_of(marks)),
    )
    return Parts(cloud)  # type: ignore[arg-type]


def test_an_untagged_security_group_is_adopted_not_made_again():
    neutron = FakeNeutron()
    orphan = neutron.orphan(
        "security_groups",
        name=group_name(APP, ENV, "lb"),
        description=group_description(APP, ENV, "lb"),
    )
    group = parts_on(neutron)._make_security_group(APP, ENV, "lb")
    assert group.id == orphan.id
    assert neutron.created == [] and neutron.deleted == []
    assert marks_of(orphan.tags) == naming.ownership(APP, ENV, "lb")


NETWORK = SimpleNamespace(id="net-1", name="private")


def make_vip_port(neutron: FakeNeutron) -> Any:
    """What ``ensure_env`` asks for once the environment's groups exist: its VIP port."""
    env_parts = EnvParts(app=APP, env=ENV, network=NETWORK, subnet=SimpleNamespace(id="sub-1"))
    env_parts.security_groups["lb"] = SimpleNamespace(id="g-lb")
    return parts_on(neutron)._make_vip_port(APP, ENV, NETWORK, env_parts)


def orphan_vip_port(neutron: FakeNeutron) -> Any:
    return neutron.orphan(
        "ports",
        name=vip_port_name(APP, ENV),
        description=vip_description(APP, ENV),
        network_id=NETWORK.id,
    )


def test_an_untagged_vip_port_is_adopted_and_given_a_router_id():
    neutron = FakeNeutron()
    orphan = orphan_vip_port(neutron)
    port = make_vip_port(neutron)
    assert port.id == orphan.id
    assert neutron.created == [] and neutron.deleted == []
    assert marks_of(orphan.tags)[MARK_VRID] == str(naming.preferred_router_id(APP, ENV))


def test_a_vip_port_with_a_router_id_keeps_it():
    """A port tagged by another builder keeps its router id: it may be in use already."""
    neutron = FakeNeutron()
    theirs = orphan_vip_port(neutron)
    theirs.tags = [f"{MARK_VRID}=7"]
    port = make_vip_port(neutron)
    assert port.id == theirs.id
    assert marks_of(theirs.tags)[MARK_VRID] == "7"


def test_a_new_vip_port_is_made_when_none_is_left():
    neutron = FakeNeutron()
    port = make_vip_port(neutron)
    assert neutron.created == ["port"]
    assert marks_of(port.tags)[MARK_VRID].isdigit()
