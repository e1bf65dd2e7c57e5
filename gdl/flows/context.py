"""What every workflow is handed, and the look-ups they share."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gdl import envstore, naming
from gdl.config import Settings
from gdl.errors import GdlError, NotFound
from gdl.joblimit import StateRunLimit
from gdl.progress import step
from gdl.providers import get_provider
from gdl.providers.base import EnvNetwork, Progress, Provider
from gdl.saltops import SaltOps

__all__ = [
    "Context",
    "Progress",
    "SaltOps",
    "env_provider",
    "env_url",
    "require_record",
    "timed_step",
]


def no_follow(app: str, env: str) -> contextlib.AbstractContextManager[Any]:
    """The default :attr:`Context.follow`: nothing to follow."""
    return contextlib.nullcontext()


@dataclass
class Context:
    settings: Settings
    salt: SaltOps
    progress: Progress
    # Opened around a command's work on environment (app, env): while open, what
    # its orchestration and minions do is reported through ``progress``, and state
    # runs outliving ``state_runs.seconds`` are stopped (and kept there).
    follow: Callable[[str, str], contextlib.AbstractContextManager[Any]] = no_follow
    state_runs: StateRunLimit = field(default_factory=lambda: StateRunLimit(float("inf")))

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
    record = envstore.load(ctx.settings.state_dir, app, env)
    if record is not None and provider is not None and provider != record.provider:
        raise GdlError(
            f"{naming.env_id(app, env)} lives on provider {record.provider}, not {provider}",
            f"leave provider= out, or give provider={record.provider}",
        )
    if provider is None:
        provider = record.provider if record else ctx.settings.provider
    return ctx.provider(provider)


def env_url(network: EnvNetwork, https: bool = False) -> str:
    """Where users reach the environment."""
    return f"{'https' if https else 'http'}://{network.public_address}/"


def timed_step(what: str, outcome: Callable[[Any], str] | None = None) -> Callable[[Any], Any]:
    """Give a step ``f(ctx, app, env, ...)`` a line as it starts and one as it ends, timed.

    ``outcome`` turns the step's return into the few words its last line ends with.
    """

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def timed(ctx: Context, app: str, env: str, *args: Any, **kwargs: Any) -> Any:
            with step(ctx.progress, what) as note:
                result = func(ctx, app, env, *args, **kwargs)
                if outcome is not None:
                    note.text = outcome(result)
            return result

        return timed

    return decorate
