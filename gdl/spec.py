"""The validated request: the one place user arguments are checked.

Runner kwargs arrive YAML-typed from the command line (``servers=2`` is the
int 2, ``servers=two`` the string ``"two"``, ``test=True`` a bool), so every
parser here accepts what the YAML loader can produce and rejects the rest
with one line that says what to type instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gdl import naming
from gdl.errors import InvalidRequest

PROVIDERS = ("local", "openstack")
MAX_SERVERS = 50
DEFAULT_SIZE = "m1.small"


@dataclass(frozen=True)
class EnvSpec:
    """What the operator asked for."""

    app: str
    env: str
    servers: int
    size: str
    provider: str

    @property
    def env_id(self) -> str:
        return naming.env_id(self.app, self.env)


def parse_app(value: Any) -> str:
    if value is None or value == "":
        raise InvalidRequest("app is missing", "add app=NAME, one of the apps under apps/")
    if not isinstance(value, str) or not naming.APP_PATTERN.match(value):
        raise InvalidRequest(
            f"app {value!r} is not a valid app name",
            "use lower-case letters, digits and '_', starting with a letter, at most 24",
        )
    return value


def parse_env(value: Any) -> str:
    if value is None or value == "":
        raise InvalidRequest("env is missing", "add env=NAME, for example env=dev")
    if not isinstance(value, str) or not naming.ENV_PATTERN.match(value):
        raise InvalidRequest(
            f"env {value!r} is not a valid environment name",
            "use a DNS label: lower-case letters, digits and '-', starting with a letter, "
            "at most 16",
        )
    return value


def parse_servers(value: Any) -> int:
    # bool is an int in Python; servers=True is a typo, not 1.
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value.strip())
        else:
            raise InvalidRequest(
                f"servers={value!r} is not a whole number",
                f"give the number of app servers, 1 to {MAX_SERVERS}, for example servers=2",
            )
    if not 1 <= value <= MAX_SERVERS:
        raise InvalidRequest(
            f"servers={value} is out of range", f"give a number from 1 to {MAX_SERVERS}"
        )
    return value


def parse_size(value: Any) -> str:
    if value is None or value == "":
        return DEFAULT_SIZE
    if not isinstance(value, str) or not value.strip() or any(c.isspace() for c in value):
        raise InvalidRequest(
            f"size={value!r} is not a flavor name", "give a flavor name, for example size=m1.small"
        )
    return value


def parse_provider(value: Any, default: str = "local") -> str:
    if value is None or value == "":
        return default
    if value not in PROVIDERS:
        raise InvalidRequest(
            f"provider={value!r} is not known", f"use one of: {', '.join(PROVIDERS)}"
        )
    return value


def parse_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
        return value.lower() in ("true", "yes")
    raise InvalidRequest(
        f"{name}={value!r} is not true or false", f"use {name}=True or {name}=False"
    )


def parse_target(app: Any, env: Any) -> tuple[str, str]:
    """An existing environment's (app, env), for status, destroy and deploy."""
    return parse_app(app), parse_env(env)


def build_spec(
    app: Any,
    env: Any,
    servers: Any = 2,
    size: Any = None,
    provider: Any = None,
    default_provider: str = "local",
) -> EnvSpec:
    """Turn the runner's arguments into an EnvSpec, or raise one clear InvalidRequest."""
    return EnvSpec(
        app=parse_app(app),
        env=parse_env(env),
        servers=parse_servers(servers),
        size=parse_size(size),
        provider=parse_provider(provider, default_provider),
    )


def reject_unknown(kwargs: dict[str, Any], allowed: tuple[str, ...]) -> None:
    """Refuse arguments a function does not take (typos must not pass silently)."""
    unknown = sorted(k for k in kwargs if not k.startswith("__") and k not in allowed)
    if unknown:
        raise InvalidRequest(
            f"unknown argument{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}",
            f"this function takes {', '.join(allowed)}",
        )
