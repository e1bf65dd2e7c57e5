"""How the ``gdl`` runner calls the workflows: refusals in one line, steps under the lock.

Kept out of ``_runners/gdl.py`` so the runner holds the functions Salt lists
and their documentation only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import salt.exceptions

from gdl import spec
from gdl.errors import GdlError
from gdl.flows.context import Context
from gdl.lock import env_lock

log = logging.getLogger(__name__)


class Refused(salt.exceptions.NotImplemented):
    """A request gdl refuses: salt-run prints the one line as is and exits 1.

    Salt's runner client reports this exception family by its message alone,
    without a traceback, which is what an operator should see for a
    mistake they can fix.
    """


def run(action: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``action``; any failure becomes a :class:`Refused` of one line."""
    try:
        return action(*args, **kwargs)
    except Refused:
        raise
    except GdlError as error:
        log.info("gdl: refused: %s", error)
        raise Refused(str(error)) from None
    except Exception as error:
        # Salt reports a TypeError raised anywhere inside a runner as "invalid
        # arguments" with exit status 0: never let a failure pass as success.
        log.exception("gdl: %s failed", getattr(action, "__name__", action))
        raise Refused(
            f"{getattr(action, '__name__', 'gdl')} failed: {type(error).__name__}: {error}"
            " (the traceback is in the master log)"
        ) from None


def check_kwargs(kwargs: dict[str, Any], allowed: tuple[str, ...], args: tuple[Any, ...]) -> None:
    run(spec.reject_positional, args, allowed)
    run(spec.reject_unknown, kwargs, allowed)


def step(
    ctx: Context,
    name: str,
    action: Callable[..., Any],
    app: str,
    env: str,
    lock_token: Any = None,
    **kwargs: Any,
) -> Any:
    """Run orchestration step ``name`` under the environment's lock.

    Inside ``gdl.build``'s orchestration the step presents the build's
    ``lock_token`` (from the orchestration's pillar) and runs under the
    build's lock; called on its own, it takes the lock itself; anything else
    is refused while another operation holds the environment.
    """
    token = str(lock_token) if lock_token else None

    def locked() -> Any:
        with env_lock(ctx.settings.lock_dir, app, env, name, token=token):
            return action(ctx, app, env, **kwargs)

    locked.__name__ = name
    return run(locked)
