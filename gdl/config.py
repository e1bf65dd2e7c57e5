"""The master's gdl settings, read from the ``gdl:`` key of the master config.

Bootstrap writes them to ``/etc/salt/master.d/gdl.conf``; tests write their
own.  Everything has a default except what only the operator can know.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gdl.errors import ConfigError

DEFAULT_STATE_DIR = "/var/lib/gdl"


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
            opts=opts,
        )
