"""How gdl marks and recognises its resources on OpenStack.

Neutron resources carry the environment's ownership marks as tags (``gdl_app=blog``,
``gdl_env=dev``, ...), servers carry them as metadata, and server groups are found by name.
Names and descriptions recognise what a build left untagged when it died.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from gdl import naming

# Extra marks beside naming.ownership(): which server a port belongs to, the VRRP id.
MARK_SERVER = "gdl_server"
MARK_SIZE = "gdl_size"
MARK_VRID = "gdl_vrid"
ROLE_VIP = "vip"


def tags_of(marks: dict[str, str]) -> list[str]:
    """Ownership marks as Neutron tags (``key=value``; tags are plain strings)."""
    return [f"{key}={value}" for key, value in sorted(marks.items())]


def marks_of(tags: Iterable[str]) -> dict[str, str]:
    """Neutron tags back into marks; tags that are not ``key=value`` are ignored."""
    marks = {}
    for tag in tags or ():
        key, sep, value = tag.partition("=")
        if sep:
            marks[key] = value
    return marks


def group_name(app: str, env: str, role: str) -> str:
    """The name of the environment's security group and server group for ``role``."""
    return f"gdl-{naming.env_id(app, env)}-{role}"


def vip_port_name(app: str, env: str) -> str:
    return f"gdl-{naming.env_id(app, env)}-{ROLE_VIP}"


# Descriptions are set in the same call that makes a resource (Neutron here takes tags only
# afterwards): a build killed between the two still leaves something destroy recognises.
def group_description(app: str, env: str, role: str) -> str:
    return f"gdl {naming.env_id(app, env)} {role} servers"


def vip_description(app: str, env: str) -> str:
    return f"gdl {naming.env_id(app, env)} virtual IP (keepalived)"


def server_description(name: str) -> str:
    """Description of the port (and any floating IP) gdl makes for server ``name``."""
    return f"gdl {name}"


def ours_by_description(resource: Any, app: str, env: str) -> bool:
    """True when a resource's description is one gdl gives (app, env)'s resources."""
    description = resource.description or ""
    fixed = (vip_description(app, env), *(group_description(app, env, r) for r in naming.ROLES))
    if description in fixed:
        return True
    server = description.removeprefix("gdl ")
    parsed = naming.parse_server_name(server)
    return parsed is not None and (parsed.app, parsed.env) == (app, env)


def keeper(resources: Sequence[Any]) -> Any:
    """The one of several equal resources every concurrent builder keeps: the oldest."""
    return min(resources, key=lambda r: (getattr(r, "created_at", None) or "", r.id))


def keeper_or_none(resources: Sequence[Any]) -> Any | None:
    """:func:`keeper` of ``resources``, or None when there are none."""
    return keeper(resources) if resources else None


def next_router_id(preferred: int, taken: Iterable[int]) -> int | None:
    """The first VRRP router id (1..255) from ``preferred`` upwards, wrapping, not taken."""
    used = set(taken)
    for step in range(255):
        candidate = (preferred - 1 + step) % 255 + 1
        if candidate not in used:
            return candidate
    return None
