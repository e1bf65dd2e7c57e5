"""The app role in an environment that serves: one app server at a time, out of rotation.

A re-run of ``gdl.build`` that finds the app role due where the environment's
address serves runs :func:`roll_app_role` (step ``gdl_app_role_rolling`` of
``orch/build.sls``) instead of the role on every app server at once, so a
change that restarts gunicorn costs no request.

Only servers that serve now are rolled: those both load balancers count UP at
the server's own address and that answer their health URL to the master.
The others (added by this build, made again under the same name, or failing
their checks) get no requests: they get the role all at once, first, and
nothing waits for them to serve. Every wait has an upper bound that ends in
one line (docs/failure.md, "What a re-run does, and what it skips").
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from gdl import apps, lbcalls, naming, rollout
from gdl.errors import GdlError
from gdl.flows.context import Context, timed_step
from gdl.flows.converge import HTTP_PORT, http_ok, role_servers
from gdl.progress import step
from gdl.providers.base import Server

HEALTH_TIMEOUT = 30.0  # seconds for an app server to answer its health URL after its role
HEALTH_INTERVAL = 0.5  # seconds between two asks
# Seconds one state run of the app role may take, on one server or on the group
# at once (a release's virtualenv included): past it, the build stops.
STATE_TIMEOUT = rollout.STATE_TIMEOUT
# Seconds before Salt asks a minion that has not answered whether its run still
# goes: a minion that died (its host killed) is given up after that, not after
# STATE_TIMEOUT. As the orchestration's own role steps: a busy machine may
# leave a sooner question unanswered and read it as a failed run.
SILENT_AFTER = 120.0
AGAIN = "fix the cause and run the build again"


def serving(server: Server, rows: Mapping[str, Any], healthy: bool) -> bool:
    """Whether ``server`` serves now: every LB in ``rows`` counts it UP at its address.

    ``rows`` holds each routing LB's ``gdl_lb.servers`` answer; ``healthy``
    whether it answers its health URL to the master. A server haproxy knows by
    its name at another address is not this one: a host made again under the
    same name that haproxy has not been told about yet.
    """
    if not rows or not healthy:
        return False
    for answer in rows.values():
        found = [
            row
            for row in (answer if isinstance(answer, list) else [])
            if isinstance(row, dict) and row.get("name") == server.name
        ]
        if not any(
            str(row.get("status", "")).startswith("UP")
            and _host(str(row.get("address", ""))) == server.address
            for row in found
        ):
            return False
    return True


def _host(address: str) -> str:
    """The host part of haproxy's ``addr`` column (``10.0.0.5:80``, ``[fd00::5]:80``)."""
    host = address.rpartition(":")[0] if ":" in address else address
    return host.strip("[]")


@timed_step("app role, one server at a time", lambda done: f"{len(done)} servers")
def roll_app_role(ctx: Context, app: str, env: str) -> list[str]:
    """Apply the app role to each app server that serves in turn, out of rotation meanwhile.

    The servers that do not serve now (see :func:`serving`) get the role all
    at once, first. Then each server that serves is drained on both load
    balancers (its requests in flight finish), gets the role (gunicorn
    restarts when its inputs changed), answers its health URL, and is back in
    rotation and counted UP by haproxy before the next one is drained:
    haproxy always has servers that serve. A server is drained only while
    another one is UP (never the last that serves). The first server that
    fails stops the step; those after it are not touched. Returns the names,
    in the order they got the role.
    """
    servers = sorted(role_servers(ctx, app, env, "app"), key=_index)
    pair = [s.name for s in role_servers(ctx, app, env, "lb")]
    lbs = lbcalls.routing(ctx.salt, pair)
    if len(lbs) < len(pair):
        # The LB role, after this step, starts it again with every server in rotation.
        idle = ", ".join(sorted(set(pair) - set(lbs)))
        ctx.progress(f"{idle}: haproxy does not run there, nothing to drain on it")
    health = apps.load_manifest(ctx.settings.apps_dir, app).health
    rows = lbcalls.backend_rows(ctx.salt, lbs)
    rolled = [s for s in servers if serving(s, rows, http_ok(_health_url(s, health)))]
    idle_servers = [s for s in servers if s not in rolled]
    done = _all_at_once(ctx, idle_servers, lbs, rows, rolled)
    for position, server in enumerate(rolled):
        _roll_one(ctx, app, env, server, lbs, health, rolled[position + 1 :])
        done.append(server.name)
    return done


def _all_at_once(
    ctx: Context,
    servers: Sequence[Server],
    lbs: Sequence[str],
    rows: Mapping[str, Any],
    after: Sequence[Server],
) -> list[str]:
    """The role on the servers that serve nothing, together, none waited for."""
    if not servers:
        return []
    names = [s.name for s in servers]
    untouched = f"; {', '.join(s.name for s in after)} not changed" if after else ""
    with step(ctx.progress, f"app role on {', '.join(names)} (not serving now), all at once"):
        answers = _apply(ctx, names)
        for name in names:
            failure = rollout.state_failure(answers.get(name))
            if failure:
                raise GdlError(f"the app role failed on {name}: {failure}{untouched}", AGAIN)
        # One left out of rotation by a build cut short would stay out: back in,
        # haproxy's own checks decide when it gets requests.
        for name in (name for name in names if _known(name, rows)):
            refused = lbcalls.refusals(ctx.salt, lbs, "gdl_lb.ready", [name], unknown_is_done=True)
            if refused:
                raise GdlError(
                    f"{name} got the app role, but haproxy did not take it back "
                    f"({'; '.join(refused)}){untouched}",
                    AGAIN,
                )
    return names


def _roll_one(
    ctx: Context,
    app: str,
    env: str,
    server: Server,
    lbs: Sequence[str],
    health: str,
    after: Sequence[Server],
) -> None:
    """Drain ``server``, apply the role, check it, put it back; one line if it failed."""
    # The app role's own lines come from its job on the minion (gdl.relay).
    if lbcalls.others_up(ctx.salt, lbs, server.name):
        with step(ctx.progress, f"{server.name}: drain"):
            lbcalls.drain_and_wait(
                ctx.salt,
                lbs,
                server.name,
                f"check salt-run gdl.status app={app} env={env}, then run the build again",
                ctx.progress,
                unknown_is_done=True,
            )
    else:
        # Out of rotation, it would leave none: a role that changes nothing
        # then costs no request; one that restarts gunicorn cannot help it.
        ctx.progress(f"{server.name}: no other server serves, not drained")
    failure = rollout.state_failure(_apply(ctx, [server.name]).get(server.name))
    # Answering before it is back: haproxy may not have seen a restart yet
    # and count it UP from before.
    url = _health_url(server, health)
    unhealthy = not failure and not _healthy_within(url, HEALTH_TIMEOUT)
    # Back in rotation even when it failed: haproxy's health checks keep a
    # server out that does not answer.
    with step(ctx.progress, f"{server.name}: back in rotation"):
        why = lbcalls.ready_and_wait(ctx.salt, lbs, server.name, unknown_is_done=True)
    if unhealthy:
        why = f"{url} did not answer 200 within {HEALTH_TIMEOUT:.0f} s"
    untouched = f"; {', '.join(s.name for s in after)} not changed" if after else ""
    if failure:
        raise GdlError(f"the app role failed on {server.name}: {failure}{untouched}", AGAIN)
    if why:
        raise GdlError(f"{server.name} got the app role, but {why}{untouched}", AGAIN)


def _apply(ctx: Context, names: list[str]) -> dict[str, Any]:
    """The app role on ``names``, within :data:`STATE_TIMEOUT`; a minion that died answers nothing.

    Queued, as the orchestration's role steps: a re-run may meet the state run
    of a build cut short still going on the minion.
    """
    return ctx.salt.apply_state(
        names, rollout.APP_STATE, {}, timeout=STATE_TIMEOUT, queue=True, silent_after=SILENT_AFTER
    )


def _known(name: str, rows: Mapping[str, Any]) -> bool:
    return any(
        isinstance(row, dict) and row.get("name") == name
        for answer in rows.values()
        if isinstance(answer, list)
        for row in answer
    )


def _health_url(server: Server, health: str) -> str:
    return f"http://{server.address}:{HTTP_PORT}{health}"


def _healthy_within(url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not http_ok(url):
        if time.monotonic() >= deadline:
            return False
        time.sleep(HEALTH_INTERVAL)
    return True


def _index(server: Server) -> int:
    parsed = naming.parse_server_name(server.name)
    return parsed.index if parsed else 0
