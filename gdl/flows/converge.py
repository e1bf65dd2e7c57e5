"""What ``orch/build.sls`` runs around the roles: each role's minions, and which roles are due.

A build does not wait for all its servers at once: each role's steps wait for
that role's minions only (:func:`minions_ready`), so the VRRP pair and the app
servers boot side by side and each role runs as soon as its own minions answer.

A re-run asks the minions only what the provider and the master's records
cannot tell (docs/failure.md, "What a re-run does, and what it skips"):

- modules are synced to a server only when the master's ``_modules`` changed
  since they were last synced to it (or the server is new);
- a role runs only when it is due (:func:`mark_due_roles`): never applied on
  exactly these servers, or its inputs (the states, the modules, the
  environment's pillar) changed since it last succeeded, or a server of the
  role fails a check (an app server's health URL, fetched from the master; an
  LB's haproxy port, and which of its daemons run, asked in one Salt job).
  The orchestration runs a role while its ``due-*.json`` file exists and
  records the run once it succeeded (:mod:`gdl.applied`).

In an environment that serves, the app role never restarts every app server
at once: :func:`gdl.flows.app_role.roll_app_role` applies it one server at a
time, each out of haproxy's rotation meanwhile.
"""

from __future__ import annotations

import functools
import hashlib
import socket
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gdl import applied, apps, pillar
from gdl import servers as servers_module
from gdl.errors import GdlError
from gdl.flows.context import Context, require_record
from gdl.progress import named, step
from gdl.providers.base import RUNNING, Server

ROLE_LABELS = {"app": "app role", "lb": "LB role"}
SERVER_LABELS = {"app": "app servers", "lb": "VRRP pair"}
# Where the roles' daemons answer (states/gdl/parameters/defaults.yaml); a server
# configured otherwise fails the check and gets its role again: slower, never wrong.
HTTP_PORT = 80
CHECK_TIMEOUT = 2.0  # seconds per server for the checks made from the master
VIP_PROBE_TIMEOUT = 0.5  # seconds; an address nobody holds yet does not answer sooner
SYNC_TIMEOUT = 300  # a busy master answers many syncs late: wait rather than fail
# What a role's "due" line adds for the runs other than the plain one.
RUN_NOTES = {
    "app-rolling": " (one server at a time, out of rotation)",
    "lb-first": " (beside the app role)",
}


def _check_role(role: str) -> str:
    if role not in ROLE_LABELS:
        raise GdlError(f"no role {role!r}", "give role=app or role=lb")
    return role


def _roots(ctx: Context, key: str) -> list[Path]:
    roots = (ctx.settings.master_opts.get(key) or {}).get("base") or []
    return [Path(root) for root in roots]


def role_servers(ctx: Context, app: str, env: str, role: str) -> list[Server]:
    """The environment's running servers of ``role``: those the role's steps target."""
    record = require_record(ctx.settings, app, env)
    found = ctx.provider(record.provider).list_servers(app, env)
    return sorted((s for s in found if s.role == role and s.state == RUNNING), key=lambda s: s.name)


def modules_digest(ctx: Context) -> str:
    """Digest of the execution modules the master serves (``salt://_modules``)."""
    return applied.tree_digest(_roots(ctx, "file_roots"), "_modules")


def role_digest(ctx: Context, app: str, env: str, role: str) -> str:
    """Digest of what a role's run depends on: states, modules and the role's pillar."""
    common, lb_only = pillar.pillar_files(ctx.settings.pillar_dir, app, env)
    pillar_files = [root / "top.sls" for root in _roots(ctx, "pillar_roots")] + [common]
    if role == "lb":
        pillar_files.append(lb_only)
    parts = (
        applied.tree_digest(_roots(ctx, "file_roots"), "gdl"),
        modules_digest(ctx),
        applied.files_digest(pillar_files),
    )
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def sync_modules(ctx: Context, app: str, env: str, servers: list[Server]) -> list[Server]:
    """Sync gdl's execution modules to those of ``servers`` that lack their current version.

    What each server was last synced with is recorded, so a re-run, or a
    deploy, asks nothing of a server already current.  The servers synced.
    """
    state_dir = ctx.settings.state_dir
    digest = modules_digest(ctx)
    synced = applied.synced_modules(state_dir, app, env)
    stale = [s for s in servers if synced.get(s.provider_id) != digest]
    if stale:
        returns = ctx.salt.call(
            [s.name for s in stale], "saltutil.sync_modules", [], timeout=SYNC_TIMEOUT
        )
        failed = [s.name for s in stale if not isinstance(returns.get(s.name), list)]
        if failed:
            raise GdlError(
                f"the modules could not be synced to {', '.join(failed)}",
                "check those servers' minion log, then run this again",
            )
        applied.record_synced(state_dir, app, env, [s.provider_id for s in stale], digest)
    return stale


def minions_ready(ctx: Context, app: str, env: str, role: str) -> dict[str, Any]:
    """Wait for the minions of ``role``'s servers."""
    role = _check_role(role)
    servers = role_servers(ctx, app, env, role)
    names = [s.name for s in servers]
    record = require_record(ctx.settings, app, env)
    provider = ctx.provider(record.provider)
    with step(ctx.progress, f"minions of the {SERVER_LABELS[role]}") as note:
        servers_module.wait_explained(
            provider,
            lambda waiting, timeout: ctx.salt.wait_for_minions(waiting, timeout, ctx.progress),
            names,
            provider.minion_timeout,
        )
        note.text = f"{len(names)} answering"
    return {"servers": names}


def lb_modules(ctx: Context, app: str, env: str) -> dict[str, Any]:
    """Sync gdl's modules to the load balancers that lack them (their minions answer).

    A step of its own, beside the LB role rather than before it: the role's
    states use none of them, only the runner's later calls on the pair do.
    """
    with step(ctx.progress, "modules of the VRRP pair") as note:
        synced = sync_modules(ctx, app, env, role_servers(ctx, app, env, "lb"))
        note.text = f"synced to {len(synced)}" if synced else "current"
    return {"synced": [s.name for s in synced]}


def mark_due_roles(ctx: Context, app: str, env: str) -> list[str]:
    """Leave a ``due-*.json`` file for each role run this build must make; the runs due."""
    due = []
    # Asked once, and only if a role is due: a new environment's address takes a while to fail.
    serves = functools.cache(lambda: _vip_serves(ctx, app, env))
    for role in ROLE_LABELS:
        run = role_due(ctx, app, env, role, serves)
        for name in applied.RUNS:
            if applied.RUNS[name] == role and name != run:
                applied.due_path(ctx.settings.state_dir, app, env, name).unlink(missing_ok=True)
        if run:
            due.append(run)
    return due


def role_due(
    ctx: Context, app: str, env: str, role: str, serves: Callable[[], bool] | None = None
) -> str | None:
    """Which run of ``role`` is due (one of :data:`gdl.applied.RUNS`), written down; says why.

    ``serves`` says whether the environment serves through its address
    (default: asked now).
    """
    role = _check_role(role)
    label = ROLE_LABELS[role]
    state_dir = ctx.settings.state_dir
    servers = role_servers(ctx, app, env, role)
    if not servers:
        return None
    digest = role_digest(ctx, app, env, role)
    current = {s.name: s.provider_id for s in servers}
    last = applied.read(applied.role_path(state_dir, app, env, role))
    if last is None:
        why = "first run"
    elif last.get("digest") != digest:
        why = "its states, modules or pillar changed"
    elif last.get("servers") != current:
        why = "its servers changed"
    else:
        failing = _failing_checks(ctx, app, role, servers)
        why = f"{', '.join(failing)} failed a check" if failing else ""
    names = named(current)
    if not why:
        ctx.progress(f"{label} on {names}: unchanged since it last succeeded, not run again")
        return None
    if serves is None:
        serves = functools.partial(_vip_serves, ctx, app, env)
    if role == "app":
        # Where requests are served, never every gunicorn restarting at once.
        run = "app-rolling" if serves() else "app"
    else:
        # Beside the app role only while nothing is served through the pair: the
        # backend may then name app servers still being set up.
        run = "lb-first" if last is None and not serves() else "lb"
    applied.write(
        applied.due_path(state_dir, app, env, run), {"digest": digest, "servers": current}
    )
    when = RUN_NOTES.get(run, "")
    ctx.progress(f"{label} on {names}: due, {why}{when}")
    return run


def _vip_serves(ctx: Context, app: str, env: str) -> bool:
    """Whether the environment's address answers at all: it serves (or was built before
    the master kept what it applied); a new one fails fast."""
    record = require_record(ctx.settings, app, env)
    network = ctx.provider(record.provider).find_env(app, env)
    if network is None:
        return False
    return _port_open(network.public_address, HTTP_PORT, timeout=VIP_PROBE_TIMEOUT)


def _failing_checks(ctx: Context, app: str, role: str, servers: list[Server]) -> list[str]:
    """Servers of ``role`` whose daemons are not all up.

    An app server is asked nothing: its health URL is fetched from the master. A
    load balancer's haproxy port is tried from the master, and one Salt job asks
    the pair which daemons run (a stopped keepalived shows nowhere else).
    """
    if role == "app":
        health = apps.load_manifest(ctx.settings.apps_dir, app).health
        return [s.name for s in servers if not http_ok(f"http://{s.address}:{HTTP_PORT}{health}")]
    names = [s.name for s in servers]
    answers = ctx.salt.call(names, "gdl_lb.running", [], timeout=CHECK_TIMEOUT * 5)
    return [
        s.name
        for s in servers
        if not _port_open(s.address, HTTP_PORT)
        or not isinstance(answers.get(s.name), dict)
        or not all(answers[s.name].values())
    ]


def http_ok(url: str) -> bool:
    """Whether ``url`` answers 2xx to the master within :data:`CHECK_TIMEOUT`."""
    try:
        # The URL is built above from the provider's address: always http://.
        with urllib.request.urlopen(url, timeout=CHECK_TIMEOUT) as response:  # noqa: S310  # nosec B310
            return 200 <= response.status < 300
    except (OSError, ValueError, urllib.error.URLError):
        return False


def _port_open(address: str | None, port: int, timeout: float = CHECK_TIMEOUT) -> bool:
    if not address:
        return False
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False
