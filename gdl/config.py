"""The master's gdl settings, read from the ``gdl:`` key of the master config.

Bootstrap writes them to ``/etc/salt/master.d/gdl.conf``; tests write their
own.  Everything has a default except what only the operator can know.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gdl.errors import ConfigError

DEFAULT_STATE_DIR = "/var/lib/gdl"
DEFAULT_PACKAGE_PORT = 4507  # the servers' package source (Salt uses 4505 and 4506)
# Seconds a state run on a server may take (a first app role makes a virtualenv):
# gdl stops a run still going after that (gdl/joblimit.py).
DEFAULT_STATE_RUN_LIMIT = 900
STATE_RUN_LIMIT_RANGE = (1, 86400)


@dataclass(frozen=True)
class Settings:
    """gdl's part of the master configuration."""

    provider: str = "local"
    state_dir: Path = Path(DEFAULT_STATE_DIR)
    source_dir: Path = Path(__file__).resolve().parent.parent  # holds apps/, states/, orch/
    pki_dir: Path = Path("/etc/salt/pki/master")
    master_config: Path = Path("/etc/salt/master")
    cache_dir: Path = Path("/var/cache/salt/master")  # the master's cachedir
    local: dict[str, Any] = field(default_factory=dict)
    openstack: dict[str, Any] = field(default_factory=dict)
    # The servers' package source (gdl/package_source.py) and what its Salt wheels are for.
    package_port: int = DEFAULT_PACKAGE_PORT
    server_python: str = "3.11"  # Debian 12's
    server_arch: str = "x86_64"
    server_glibc: str = "2.36"  # Debian 12's
    state_run_limit: int = DEFAULT_STATE_RUN_LIMIT
    # The whole master configuration, for Salt's own APIs (keys, cache, event bus).
    opts: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def apps_dir(self) -> Path:
        return self.source_dir / "apps"

    @property
    def pillar_dir(self) -> Path:
        """Where the runner writes each environment's pillar."""
        return self.state_dir / "pillar"

    @property
    def lock_dir(self) -> Path:
        return self.state_dir / "locks"

    @property
    def master_opts(self) -> dict[str, Any]:
        """The master's options; without them (plain Python use), its directories alone."""
        return self.opts or {"pki_dir": str(self.pki_dir), "cachedir": str(self.cache_dir)}

    @classmethod
    def from_opts(cls, opts: dict[str, Any]) -> Settings:
        """Read the settings from a Salt opts dict (``__opts__`` in a runner)."""
        section = opts.get("gdl") or {}
        if not isinstance(section, dict):
            raise ConfigError(
                "the master's 'gdl' setting is not a mapping",
                "fix /etc/salt/master.d/gdl.conf (see bootstrap.sh)",
            )
        defaults = cls()
        return cls(
            provider=str(section.get("provider", defaults.provider)),
            state_dir=Path(section.get("state_dir", DEFAULT_STATE_DIR)),
            source_dir=Path(section.get("source_dir", defaults.source_dir)),
            pki_dir=Path(opts.get("pki_dir", defaults.pki_dir)),
            master_config=Path(opts.get("conf_file", defaults.master_config)),
            cache_dir=Path(opts.get("cachedir", defaults.cache_dir)),
            local=dict(section.get("local") or {}),
            openstack=dict(section.get("openstack") or {}),
            package_port=_port(section, "package_port", DEFAULT_PACKAGE_PORT),
            server_python=_version(section, "server_python", defaults.server_python),
            server_arch=_word(section, "server_arch", defaults.server_arch),
            server_glibc=_version(section, "server_glibc", defaults.server_glibc),
            state_run_limit=_seconds(section, "state_run_limit", DEFAULT_STATE_RUN_LIMIT),
            opts=opts,
        )


def _port(section: dict[str, Any], key: str, default: int) -> int:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise ConfigError(
            f"gdl:{key} {value!r} is not a TCP port",
            f"give a number from 1 to 65535, or leave it out for {default}",
        )
    return value


def _seconds(section: dict[str, Any], key: str, default: int) -> int:
    value = section.get(key, default)
    low, high = STATE_RUN_LIMIT_RANGE
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(
            f"gdl:{key} {value!r} is not a whole number of seconds from {low} to {high}",
            f"give one, or leave it out for {default}",
        )
    return value


def _version(section: dict[str, Any], key: str, default: str) -> str:
    value = str(section.get(key, default))
    if not re.fullmatch(r"[0-9]+\.[0-9]+", value):
        raise ConfigError(
            f"gdl:{key} {value!r} is not a version like {default}",
            f"give MAJOR.MINOR in quotes, or leave it out for {default}",
        )
    return value


def _word(section: dict[str, Any], key: str, default: str) -> str:
    value = str(section.get(key, default))
    if not re.fullmatch(r"[a-z0-9_]+", value):
        raise ConfigError(
            f"gdl:{key} {value!r} is not an architecture name",
            f"give one such as x86_64 or aarch64, or leave it out for {default}",
        )
    return value
