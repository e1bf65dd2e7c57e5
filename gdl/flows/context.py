"""What every workflow is handed, and the look-ups they share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from gdl import envstore, naming
from gdl.config import Settings
from gdl.errors import NotFound
from gdl.providers import get_provider
from gdl.providers.base import EnvNetwork, Progress, Provider

__all__ = ["Context", "Progress", "SaltOps", "env_provider", "env_url", "require_record"]


class SaltOps(Protocol):
    """What the workflows need from a running Salt master (:class:`gdl.saltops.MasterOps`)."""

    def ping(self, minions: list[str], timeout: float) -> set[str]:
        """The minions that answered test.ping."""

    def wait_for_minions(self, minions: list[str], timeout: float, progress: Progress) -> None:
        """Return once every minion answers; ProviderError naming the silent ones at ``timeout``."""

    def call(self, minions: list[str], function: str, args: list[Any], timeout: float = 10) -> dict:
        """{minion: return} of an execution function run on ``minions``."""

    def apply_state(
        self, minions: list[str], sls: str, pillar: dict[str, Any], timeout: float = 600
    ) -> dict[str, Any]:
        """{minion: state return} of ``sls`` applied with ``pillar`` on ``minions``."""

    def cloud_create(self, profile: str, names: list[str], overrides: dict[str, Any]) -> None:
        """Make servers through salt-cloud's profile."""

    def orchestrate(self, sls: str, pillar: dict[str, Any], test: bool) -> tuple[bool, Any]:
        """Run an orchestrate SLS; (succeeded, its return)."""

    def lb_status(self, lbs: list[str], vip: str) -> dict[str, Any]:
        """Which of ``lbs`` holds ``vip``, and its haproxy backends' states."""


@dataclass
class Context:
    settings: Settings
    salt: SaltOps
    progress: Progress

    def provider(self, name: str) -> Provider:
        return get_provider(name, self.settings)


def require_record(settings: Settings, app: str, env: str) -> envstore.EnvRecord:
    """The environment's record; NotFound (build it first) when there is none."""
    record = envstore.load(settings.state_dir, app, env)
    if record is None:
        raise NotFound(
            f"environment {naming.env_id(app, env)} does not exist",
            f"build it first: salt-run gdl.build app={app} env={env}",
        )
    return record


def env_provider(ctx: Context, app: str, env: str, provider: str | None = None) -> Provider:
    """The provider that holds an environment: the one asked for, else its record's."""
    if provider is None:
        record = envstore.load(ctx.settings.state_dir, app, env)
        provider = record.provider if record else ctx.settings.provider
    return ctx.provider(provider)


def env_url(network: EnvNetwork) -> str:
    """Where users reach the environment."""
    return f"http://{network.public_address}/"
