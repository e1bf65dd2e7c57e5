"""What a build must do: the desired environment against what exists.

Pure functions over names and server records, so the plan that
``test=True`` prints is exactly the plan a real build carries out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from gdl import naming
from gdl.providers.base import ERROR, STOPPED, Server

LB_COUNT = 2  # the VRRP pair


@dataclass(frozen=True)
class Plan:
    """Names to create, to replace (broken: delete then create), to remove, and to keep."""

    app: str
    env: str
    create: tuple[str, ...] = ()
    replace: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()
    keep: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=(), compare=False)

    @property
    def changes(self) -> bool:
        return bool(self.create or self.replace or self.remove)

    def of_role(self, role: str) -> Plan:
        """The part of the plan that concerns one role."""

        def mine(names: Iterable[str]) -> tuple[str, ...]:
            return tuple(n for n in names if n.startswith(f"{role}-"))

        return Plan(
            app=self.app,
            env=self.env,
            create=mine(self.create),
            replace=mine(self.replace),
            remove=mine(self.remove),
            keep=mine(self.keep),
        )

    def as_dict(self) -> dict[str, list[str]]:
        return {
            "create": list(self.create),
            "replace": list(self.replace),
            "remove": list(self.remove),
            "keep": list(self.keep),
        }

    def describe(self) -> list[str]:
        """The plan as lines a person reads."""
        if not self.changes:
            return [f"{naming.env_id(self.app, self.env)}: no changes"]
        lines = [f"create {name}" for name in self.create]
        lines += [f"replace {name} (broken)" for name in self.replace]
        lines += [f"drain and remove {name}" for name in self.remove]
        lines += [f"keep {name}" for name in self.keep]
        return lines


def desired_names(app: str, env: str, app_servers: int) -> list[str]:
    """Every server the environment should have: the VRRP pair and ``app_servers`` apps."""
    names = [naming.server_name("lb", i, app, env) for i in range(LB_COUNT)]
    names += [naming.server_name("app", i, app, env) for i in range(app_servers)]
    return names


def _sort_key(name: str) -> tuple[str, int]:
    parsed = naming.parse_server_name(name)
    return (parsed.role, parsed.index) if parsed else (name, 0)


def make_plan(
    app: str,
    env: str,
    app_servers: int,
    existing: Iterable[Server],
    never_joined: Iterable[str] = (),
) -> Plan:
    """Compare the desired environment with the servers that exist.

    Surplus app servers are the highest-numbered ones, so scaling down and up
    again reuses the same names.  A server the provider reports broken
    (ERROR, or a local host whose PID 1 died), or one whose minion never
    joined the master (``never_joined``), is replaced in place.
    """
    wanted = set(desired_names(app, env, app_servers))
    present = {s.name: s for s in existing if s.app == app and s.env == env}
    silent = set(never_joined)
    create = sorted(wanted - present.keys(), key=_sort_key)
    replace = sorted(
        (n for n in wanted & present.keys() if present[n].state in (ERROR, STOPPED) or n in silent),
        key=_sort_key,
    )
    remove = sorted(present.keys() - wanted, key=_sort_key)
    keep = sorted((wanted & present.keys()) - set(replace), key=_sort_key)
    return Plan(
        app=app,
        env=env,
        create=tuple(create),
        replace=tuple(replace),
        remove=tuple(remove),
        keep=tuple(keep),
    )
