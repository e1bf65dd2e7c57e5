"""A stand-in for an openstacksdk connection with admin credentials, for unit tests.

Only for what the rig cannot show on demand: what an admin's Neutron lists (every project's
resources unless ``project_id`` narrows them) and what a call did before it failed. Its
Neutron keeps resources by id, lists them filtered by equal fields and by tags, and records
every call; its Nova answers with no servers and keeps server groups per project.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

PROJECT = "proj-mine"
OTHER_PROJECT = "proj-other"

# The Neutron list calls, by the kind of resource they list.
LISTS = {
    "networks": "network",
    "subnets": "subnet",
    "ports": "port",
    "ips": "ip",
    "security_groups": "security_group",
    "security_group_rules": "security_group_rule",
}


def resource(kind: str, **fields: Any) -> SimpleNamespace:
    """A Neutron resource with the fields gdl reads, ``fields`` over the defaults."""
    defaults: dict[str, Any] = {
        "kind": kind,
        "project_id": PROJECT,
        "name": "",
        "description": "",
        "tags": [],
        "created_at": "",
    }
    return SimpleNamespace(**{**defaults, **fields})


class FakeNeutron:
    """``conn.network``: resources by id; every call recorded as (method, kwargs)."""

    def __init__(self, project: Callable[[], str]) -> None:
        self.project = project
        self.resources: dict[str, SimpleNamespace] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.deleted: list[str] = []
        self._ids = itertools.count(1)

    def add(self, kind: str, **fields: Any) -> SimpleNamespace:
        fields.setdefault("id", f"{kind}-{next(self._ids)}")
        made = resource(kind, **fields)
        self.resources[made.id] = made
        return made

    def listed(self, kind: str, **query: Any) -> list[SimpleNamespace]:
        found = []
        for item in self.resources.values():
            if item.kind != kind:
                continue
            if query.get("tags") and not set(query["tags"].split(",")) <= set(item.tags):
                continue
            if query.get("fixed_ips"):
                continue  # no router interfaces here
            fields = {k: v for k, v in query.items() if k not in ("tags", "fixed_ips")}
            if all(getattr(item, key, None) == value for key, value in fields.items()):
                found.append(item)
        return found

    def __getattr__(self, method: str) -> Callable[..., Any]:
        if method in LISTS:

            def lister(**query: Any) -> list[SimpleNamespace]:
                self.calls.append((method, query))
                return self.listed(LISTS[method], **query)

            return lister
        kind = method.split("_", 1)[-1]
        if method.startswith("create_"):

            def create(**fields: Any) -> SimpleNamespace:
                self.calls.append((method, fields))
                fields.setdefault("project_id", self.project())
                if kind == "port":
                    # Neutron answers with the address it gave.
                    fields["fixed_ips"] = [{"ip_address": "10.0.0.9"}]
                if kind == "ip":
                    fields.setdefault("floating_ip_address", "203.0.113.9")
                return self.add(kind, **fields)

            return create
        if method.startswith("delete_"):

            def delete(item: Any, ignore_missing: bool = True) -> None:
                self.calls.append((method, {"id": item.id}))
                self.deleted.append(item.id)
                self.resources.pop(item.id, None)

            return delete
        if method.startswith("get_"):

            def get(item: Any) -> SimpleNamespace:
                self.calls.append((method, {}))
                return self.resources[getattr(item, "id", item)]

            return get
        if method.startswith("find_"):

            def find(name_or_id: str, ignore_missing: bool = True, **query: Any) -> Any:
                self.calls.append((method, {"name_or_id": name_or_id, **query}))
                for item in self.listed(kind, **query):
                    if name_or_id in (item.id, item.name):
                        return item
                return None

            return find
        raise AttributeError(method)

    def set_tags(self, item: Any, tags: list[str]) -> None:
        self.calls.append(("set_tags", {"id": item.id}))
        self.resources[item.id].tags = list(tags)


class FakeNova:
    """``conn.compute``: no servers; server groups kept per project."""

    def __init__(self, project: Callable[[], str]) -> None:
        self.project = project
        self.groups: list[SimpleNamespace] = []
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def servers(self, **query: Any) -> list[Any]:
        self.calls.append(("servers", query))
        return []

    def server_groups(self, **query: Any) -> list[SimpleNamespace]:
        self.calls.append(("server_groups", query))
        if query.get("all_projects"):
            return list(self.groups)
        return [g for g in self.groups if g.project_id == self.project()]

    def create_server_group(self, name: str, policy: str) -> SimpleNamespace:
        group = SimpleNamespace(
            id=f"sg-{len(self.groups)}",
            name=name,
            policy=policy,
            project_id=self.project(),
            member_ids=[],
            created_at="",
        )
        self.groups.append(group)
        return group

    def delete_server_group(self, group: Any, ignore_missing: bool = True) -> None:
        self.calls.append(("delete_server_group", {"id": group.id}))
        self.groups = [g for g in self.groups if g.id != group.id]

    def get_endpoint_data(self) -> SimpleNamespace:
        return SimpleNamespace(max_microversion="2.90")


class FakeConnection:
    """An admin's connection, scoped to project ``current_project_id``."""

    def __init__(self, project: str = PROJECT) -> None:
        self.current_project_id = project
        self.network = FakeNeutron(lambda: self.current_project_id)
        self.compute = FakeNova(lambda: self.current_project_id)
