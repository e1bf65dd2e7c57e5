"""The validated request: the one place user arguments are checked.

Runner kwargs arrive YAML-typed from the command line (``servers=2`` is the
int 2, ``servers=two`` the string ``"two"``, ``test=True`` a bool), so every
parser here accepts what the YAML loader can produce and rejects the rest
with one line that says what to type instead.  A value quoted back in such a
line is shown by ``repr`` and cut short: whatever an operator typed (newlines,
terminal escapes, a megabyte of text) prints as one short, inert line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from gdl import naming
from gdl.errors import InvalidRequest

PROVIDERS = ("local", "openstack")
MAX_SERVERS = 50
DEFAULT_SIZE = "m1.small"
# The VRRP timing profiles of the lb role (docs/vrrp.md): the keepalived values of
# each, written to the environment's pillar (gdl:vrrp) by gdl.pillar.
VRRP_PROFILES: dict[str, dict[str, int | float]] = {
    # Safe on noisy, shared cloud networks: a lost advert or a slow scheduler
    # never causes a spurious failover. Takeover ~3.5 s.
    "default": {
        "version": 2,
        "advert_int": 1,
        "garp_master_delay": 1,
        "garp_master_repeat": 3,
        "garp_master_refresh": 10,
        "check_interval": 1,
        # The haproxy check fails only when no haproxy runs: once is enough.
        "check_fall": 1,
        "check_rise": 2,
    },
    # For networks with reliable, low-latency delivery between the LBs (same
    # rack or host, no policing of VRRP). Takeover ~1 s.
    "fast": {
        "version": 3,
        "advert_int": 0.25,
        "garp_master_delay": 1,
        "garp_master_repeat": 3,
        "garp_master_refresh": 10,
        "check_interval": 1,
        "check_fall": 1,
        "check_rise": 2,
    },
}
# Whole-number VRRP settings and their lowest value.
VRRP_WHOLE_LOWEST = {
    "check_interval": 1,
    "check_fall": 1,
    "check_rise": 1,
    "garp_master_delay": 0,
    "garp_master_repeat": 1,
    "garp_master_refresh": 0,
}
# Flavor names as clouds spell them; nothing a shell, YAML or a file name would
# read as something else.
SIZE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+-]{0,63}\Z")
# A release's version, as app manifests give it (see gdl.apps).
VERSION_PATTERN = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._+-]{0,31}\Z")
# How many characters of a bad value an error line quotes.
SHOWN_CHARS = 40


@dataclass(frozen=True)
class EnvSpec:
    """What the operator asked for."""

    app: str
    env: str
    servers: int
    size: str
    provider: str
    # None: keep the environment's profile (a new one gets "default").
    vrrp_profile: str | None = None
    # The load balancers' size: their salt-cloud profile's (read by the build); None: size.
    lb_size: str | None = None

    @property
    def env_id(self) -> str:
        return naming.env_id(self.app, self.env)


def shown(value: Any) -> str:
    """``repr(value)``, cut to SHOWN_CHARS: safe to put in a one-line message."""
    text = repr(value)
    if len(text) > SHOWN_CHARS:
        text = f"{text[: SHOWN_CHARS - 3]}... ({len(str(value))} characters)"
    return text


def _missing(value: Any) -> bool:
    return value is None or value == ""


def parse_app(value: Any) -> str:
    if _missing(value):
        raise InvalidRequest("app is missing", "add app=NAME, one of the apps under apps/")
    if not isinstance(value, str) or not naming.APP_PATTERN.match(value):
        raise InvalidRequest(
            f"app {shown(value)} is not a valid app name",
            "use lower-case letters, digits and '_', starting with a letter, at most 24",
        )
    return value


def parse_env(value: Any) -> str:
    if _missing(value):
        raise InvalidRequest("env is missing", "add env=NAME, for example env=dev")
    if not isinstance(value, str) or not naming.ENV_PATTERN.match(value):
        raise InvalidRequest(
            f"env {shown(value)} is not a valid environment name",
            "use a DNS label: lower-case letters, digits and '-', starting with a letter, "
            "at most 16",
        )
    return value


def pick_env(env: Any, environment: Any) -> Any:
    """``env`` or its orchestrate-safe spelling ``environment``; both only when they agree."""
    if not _missing(env) and not _missing(environment) and env != environment:
        raise InvalidRequest(
            f"env={shown(env)} and environment={shown(environment)} disagree",
            "give only one of them",
        )
    return env if not _missing(env) else environment


def parse_count(name: str, value: Any, low: int, high: int, example: int) -> int:
    """A whole number from ``low`` to ``high``: an int, or a string of ASCII digits."""
    hint = f"give a whole number from {low} to {high}, for example {name}={example}"
    if _missing(value):
        raise InvalidRequest(f"{name} is empty", hint)
    # bool is an int in Python; servers=True is a typo, not 1.
    if isinstance(value, bool) or not isinstance(value, int):
        text = value.strip() if isinstance(value, str) else ""
        # ASCII only: str.isdigit() also takes other scripts' digits and superscripts.
        if not (text.isascii() and text.isdigit() and len(text) <= 6):
            raise InvalidRequest(f"{name}={shown(value)} is not a whole number", hint)
        value = int(text)
    if not low <= value <= high:
        raise InvalidRequest(f"{name}={value} is out of range", hint)
    return value


def parse_servers(value: Any) -> int:
    return parse_count("servers", value, 1, MAX_SERVERS, 2)


def parse_batch(value: Any) -> int:
    """How many servers a deploy takes out of rotation at once."""
    return parse_count("batch", value, 1, MAX_SERVERS, 1)


def parse_size(value: Any) -> str:
    if _missing(value):
        return DEFAULT_SIZE
    if not isinstance(value, str) or not SIZE_PATTERN.match(value):
        raise InvalidRequest(
            f"size={shown(value)} is not a flavor name",
            "give a flavor name (letters, digits, '.', '_', ':', '+', '-'), "
            "for example size=m1.small",
        )
    return value


def parse_version(value: Any, required: bool = False) -> str | None:
    """A release version (``1.2.0``); None when not given and not required."""
    if _missing(value):
        if required:
            raise InvalidRequest("version is missing", "add version=X.Y.Z")
        return None
    # YAML reads version=1.0 as the float 1.0 and version=2 as an int.
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not VERSION_PATTERN.match(value):
        raise InvalidRequest(
            f"version={shown(value)} is not a release version",
            "use letters, digits, '.', '_', '+' and '-', at most 32, for example version=1.2.0",
        )
    return value


def parse_provider(value: Any, default: str = "local") -> str:
    if _missing(value):
        return default
    if not isinstance(value, str) or value not in PROVIDERS:
        raise InvalidRequest(
            f"provider={shown(value)} is not known", f"use one of: {', '.join(PROVIDERS)}"
        )
    return value


def parse_vrrp_profile(value: Any) -> str | None:
    """A VRRP timing profile; None when not given (the environment keeps its own)."""
    if _missing(value):
        return None
    if not isinstance(value, str) or value not in VRRP_PROFILES:
        raise InvalidRequest(
            f"vrrp={shown(value)} is not a VRRP profile",
            f"use one of: {', '.join(VRRP_PROFILES)} (see docs/vrrp.md)",
        )
    return value


def vrrp_settings(profile: Any, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """keepalived's values for ``profile``, each replaced by one set in ``overrides``.

    Checked here so keepalived is never given a value it would round or
    ignore: VRRPv2 counts adverts in whole seconds, VRRPv3 in hundredths.
    The keys and errors are those of pillar ``gdl:vrrp`` (docs/vrrp.md).
    """
    if not isinstance(profile, str) or profile not in VRRP_PROFILES:
        raise InvalidRequest(
            f"pillar gdl:vrrp:profile is {profile}",
            f"use one of {', '.join(sorted(VRRP_PROFILES))} (docs/vrrp.md)",
        )
    chosen = dict(overrides or {})
    settings: dict[str, Any] = {"profile": profile}
    for key, value in VRRP_PROFILES[profile].items():
        settings[key] = value if chosen.get(key) is None else chosen[key]
    for key, value in settings.items():
        if key != "profile" and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise InvalidRequest(
                f"pillar gdl:vrrp:{key} is {value}", f"give a number (profile {profile})"
            )
    version, advert = settings["version"], settings["advert_int"]
    if version not in (2, 3):
        raise InvalidRequest(f"pillar gdl:vrrp:version is {version}", "use 2 or 3")
    if version == 2 and not (isinstance(advert, int) and 1 <= advert <= 255):
        raise InvalidRequest(
            f"pillar gdl:vrrp:advert_int is {advert}",
            "VRRPv2 takes whole seconds, 1 to 255; sub-second adverts need version 3",
        )
    in_hundredths = abs(advert * 100 - round(advert * 100)) < 0.001
    if version == 3 and not (0.01 <= advert <= 40.95 and in_hundredths):
        raise InvalidRequest(
            f"pillar gdl:vrrp:advert_int is {advert}",
            "VRRPv3 takes 0.01 to 40.95 seconds, in hundredths",
        )
    for key, lowest in VRRP_WHOLE_LOWEST.items():
        if not isinstance(settings[key], int) or settings[key] < lowest:
            raise InvalidRequest(
                f"pillar gdl:vrrp:{key} is {settings[key]}",
                f"give a whole number, at least {lowest}",
            )
    return settings


def parse_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
        return value.lower() in ("true", "yes")
    raise InvalidRequest(
        f"{name}={shown(value)} is not true or false", f"use {name}=True or {name}=False"
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
    vrrp: Any = None,
) -> EnvSpec:
    """Turn the runner's arguments into an EnvSpec, or raise one clear InvalidRequest."""
    return EnvSpec(
        app=parse_app(app),
        env=parse_env(env),
        servers=parse_servers(servers),
        size=parse_size(size),
        provider=parse_provider(provider, default_provider),
        vrrp_profile=parse_vrrp_profile(vrrp),
    )


@dataclass(frozen=True)
class DeployRequest:
    """A rolling deploy the operator asked for."""

    app: str
    env: str
    version: str | None  # None: the source's (or apps/<app>'s) version
    source: str | None  # a directory holding the release; None: apps/<app>
    batch: int

    @property
    def env_id(self) -> str:
        return naming.env_id(self.app, self.env)


def deploy_request(
    app: Any, env: Any, version: Any = None, source: Any = None, batch: Any = 1
) -> DeployRequest:
    """Turn gdl.deploy's arguments into a DeployRequest, or raise one clear InvalidRequest."""
    app, env = parse_target(app, env)
    if source is not None and not str(source).strip():
        raise InvalidRequest("source is empty", f"give the directory of a release of {app}")
    return DeployRequest(
        app=app,
        env=env,
        version=parse_version(version),
        source=None if source is None else str(source),
        batch=parse_batch(batch),
    )


def reject_unknown(kwargs: dict[str, Any], allowed: tuple[str, ...]) -> None:
    """Refuse arguments a function does not take (typos must not pass silently)."""
    unknown = sorted(k for k in kwargs if not k.startswith("__") and k not in allowed)
    if unknown:
        takes = (
            f"this function takes {', '.join(allowed)}"
            if allowed
            else "this function takes no arguments"
        )
        raise InvalidRequest(
            f"unknown argument{'s' if len(unknown) > 1 else ''} "
            + ", ".join(
                k if k.isidentifier() and len(k) <= SHOWN_CHARS else shown(k) for k in unknown
            ),
            takes,
        )


def reject_positional(args: tuple[Any, ...], allowed: tuple[str, ...]) -> None:
    """Refuse values given without a name beyond those a function takes in order.

    Salt reports a runner call with too many positional values as "invalid
    arguments" and exits 0; catching them here keeps the exit status honest.
    """
    if args:
        example = " ".join(f"{name}=..." for name in allowed[:2])
        raise InvalidRequest(
            f"unexpected value{'s' if len(args) > 1 else ''} "
            f"{', '.join(shown(a) for a in args[:3])} without a name",
            f"name every argument, for example {example}"
            if allowed
            else "this function takes no arguments",
        )
