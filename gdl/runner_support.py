"""What the ``gdl`` runner (``_runners/gdl.py``) needs besides the workflows.

- Orchestration steps run under the environment's lock, entered with the
  token of the build that runs them (:func:`locked_step`).
- Refusals: a request gdl cannot carry out is one line and exit status 1, and
  a call Salt would report as "invalid arguments" with exit status 0 is refused
  the same way (:func:`guarded`, :func:`whole_call`, :func:`check_kwargs`).
- The session of one runner call (:func:`session`): the Context the workflows
  get, with progress lines that reach the operator, Salt's noise kept off the
  terminal, and what the call opened closed at its end.  A command
  (``gdl.build``, ``destroy``, ``deploy``) follows its orchestration and
  minions on the event bus; an orchestration step fires its lines as events
  for the command that runs it (:mod:`gdl.relay`).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Callable, Iterator
from typing import Any

import salt.exceptions

from gdl import spec
from gdl.config import Settings
from gdl.errors import GdlError
from gdl.flows.context import Context
from gdl.joblimit import StateRunLimit
from gdl.lock import env_lock
from gdl.progress import Reporter, tag
from gdl.relay import EventRelay
from gdl.saltops import MasterOps
from gdl.terminal import quiet_salt_noise, quiet_stray_lines

log = logging.getLogger("salt.loaded.ext.runners.gdl")

PROGRESS_OUTPUTTER = "gdl_progress"


class Refused(salt.exceptions.NotImplemented):
    """A request gdl refuses: salt-run prints the one line as is and exits 1.

    Salt's runner client reports this exception family by its message alone,
    without a traceback, which is what an operator should see for a
    mistake they can fix.
    """


def guarded(action: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``action(*args, **kwargs)``, every failure turned into a one-line :class:`Refused`."""
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


def check_kwargs(kwargs: dict[str, Any], allowed: tuple[str, ...], args: tuple[Any, ...] = ()):
    guarded(spec.reject_positional, args, allowed)
    guarded(spec.reject_unknown, kwargs, allowed)


def target(app: Any, env: Any, environment: Any) -> tuple[str, str]:
    """(app, env) of an existing environment; ``environment`` is ``env``'s orchestrate spelling."""
    return guarded(spec.parse_target, app, guarded(spec.pick_env, env, environment))


def bind_or_refuse(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]):
    """Refuse in one line a call whose values do not bind to ``func``'s arguments.

    Salt answers a runner whose call raises TypeError (``app`` given twice,
    by name and by position) with a usage text and exit status 0.
    """
    # From the start: a refusal's terminal shows its one line, not Salt's warnings.
    quiet_salt_noise()
    try:
        inspect.signature(func).bind(*args, **kwargs)
    except TypeError as error:
        raise Refused(
            f"gdl.{func.__name__.rstrip('_')}: {error}: "
            "give each argument once, as NAME=VALUE on one line"
        ) from None


def _printer(jid_event: Any) -> Callable[[str, dict[str, Any]], None]:
    """A sink that prints through the runner call's own event (salt-run shows those)."""

    def show(message: str, marks: dict[str, Any]) -> None:
        log.info("gdl: %s", message)
        if jid_event is None:
            return
        try:
            jid_event.fire_event({"message": message, "outputter": PROGRESS_OUTPUTTER}, "progress")
        except Exception:  # a dropped event bus (ReferenceError): the line is in the log only
            log.info("gdl: could not print %r", message, exc_info=True)

    return show


@contextlib.contextmanager
def session(
    opts: dict[str, Any],
    orchestrate: Callable[..., Any] | None,
    jid_event: Any,
    step_of: tuple[str, str] | None = None,
) -> Iterator[Context]:
    """The Context of one runner call; ``step_of`` (app, env) for an orchestration step.

    ``jid_event`` is the call's ``__jid_event__`` (None outside salt-run), taken
    at the call's start: a nested runner may point the module's global elsewhere.
    """
    quiet_salt_noise()
    settings = guarded(Settings.from_opts, opts)
    ops = MasterOps(opts, orchestrate)
    show = _printer(jid_event)
    # Applied by a command's relay; an orchestration step's runs are its command's.
    state_runs = StateRunLimit(settings.state_run_limit)
    with contextlib.ExitStack() as stack:
        stack.enter_context(quiet_stray_lines())
        stack.callback(ops.close)
        if step_of is None:
            reporter = Reporter(show)

            def follow(app: str, env: str) -> EventRelay:
                return EventRelay(opts, app, env, reporter, limit=state_runs)

        else:
            reporter = Reporter(_step_sink(opts, show, tag(*step_of), stack))

            def follow(app: str, env: str) -> contextlib.AbstractContextManager[None]:
                return contextlib.nullcontext()

        yield Context(
            settings=settings, salt=ops, progress=reporter, follow=follow, state_runs=state_runs
        )


def _step_sink(
    opts: dict[str, Any],
    show: Callable[[str, dict[str, Any]], None],
    event_tag: str,
    stack: contextlib.ExitStack,
) -> Callable[[str, dict[str, Any]], None]:
    """Lines of an orchestration step: printed when run alone, fired for the command running it."""
    bus: list[Any] = []

    def fire(message: str, marks: dict[str, Any]) -> None:
        show(message, marks)
        try:
            if not bus:
                import salt.utils.event

                bus.append(
                    stack.enter_context(
                        salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=False)
                    )
                )
            bus[0].fire_event({"message": message, **marks}, event_tag)
        except Exception:  # a line that cannot be relayed is still in the log
            log.debug("gdl: could not fire %s", event_tag, exc_info=True)

    return fire


def locked_step(
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
    return guarded(locked)
