"""Names and ownership marks of everything an environment owns.

An environment is the pair (app, env).  Every server, port, group and key it
owns is named from that pair and carries the marks returned by
:func:`ownership`, so several environments share one cloud project without
ever touching each other's resources.

App names are identifiers (``hello_world``) and environment names are DNS
labels without underscores (``dev``, ``qa-2``), so a server name such as
``app-0-hello_world-qa`` reads back into exactly one (role, index, app, env).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

ROLES = ("app", "lb")
APP_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,23}\Z")
ENV_PATTERN = re.compile(r"^[a-z](?:[a-z0-9-]{0,14}[a-z0-9])?\Z")
SERVER_PATTERN = re.compile(
    r"^(?P<role>app|lb)-(?P<index>0|[1-9][0-9]{0,2})-(?P<app>[a-z][a-z0-9_]{0,23})-(?P<env>[a-z](?:[a-z0-9-]{0,14}[a-z0-9])?)\Z"
)

# Keys of the ownership marks (OpenStack metadata, tags, local host records).
MARK_PREFIX = "gdl"
MARK_APP = "gdl_app"
MARK_ENV = "gdl_env"
MARK_ROLE = "gdl_role"


@dataclass(frozen=True, order=True)
class ServerName:
    """A parsed server name: ``<role>-<index>-<app>-<env>``."""

    app: str
    env: str
    role: str
    index: int

    def __str__(self) -> str:
        return f"{self.role}-{self.index}-{self.app}-{self.env}"


def server_name(role: str, index: int, app: str, env: str) -> str:
    """The name of server ``index`` of ``role`` in environment (app, env)."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")
    return str(ServerName(app=app, env=env, role=role, index=index))


def parse_server_name(name: str) -> ServerName | None:
    """Read a server name back; None for a name gdl did not make."""
    match = SERVER_PATTERN.match(name)
    if match is None:
        return None
    return ServerName(
        app=match["app"], env=match["env"], role=match["role"], index=int(match["index"])
    )


def env_id(app: str, env: str) -> str:
    """The environment's identifier, used in file names and group names."""
    return f"{app}-{env}"


def ownership(app: str, env: str, role: str | None = None) -> dict[str, str]:
    """The marks every resource of the environment carries."""
    marks = {MARK_APP: app, MARK_ENV: env}
    if role is not None:
        marks[MARK_ROLE] = role
    return marks


def owned_by(marks: dict[str, str], app: str, env: str) -> bool:
    """True when a resource's marks say it belongs to (app, env)."""
    return marks.get(MARK_APP) == app and marks.get(MARK_ENV) == env


def short_hash(*parts: str, length: int = 8) -> str:
    """A stable hex digest, for names the kernel keeps short (interfaces: 15 bytes)."""
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()
    return digest[:length]


def preferred_router_id(app: str, env: str) -> int:
    """The VRRP virtual router id tried first for an environment (1..255).

    Callers probe upwards from here past the ids other environments on the
    same network already hold, so two environments never share one.
    """
    return int(short_hash("vrid", app, env), 16) % 255 + 1


def lock_name(app: str, env: str) -> str:
    """The name of the lock that serialises operations on one environment."""
    return f"gdl-{env_id(app, env)}"
