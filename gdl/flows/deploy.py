"""``gdl.deploy`` and ``gdl.rollback``: a new release of the app, one server (or batch) at a time.

For each batch of app servers, in index order:

1. drain them in haproxy on both load balancers (no new requests) and wait
   until their requests in flight have finished;
2. apply ``gdl.app`` on them with the release's version in pillar: the
   release is unpacked beside the others and ``current`` switched to it;
3. ask each server's health check straight from a load balancer (not
   through haproxy) until it answers 200 and names the new version;
4. put them back in rotation on both load balancers and wait until haproxy
   counts them UP, so the next batch never leaves the backend empty.

A server that fails step 2 or 3 is switched back to the release it ran,
checked and put back in rotation; the deploy stops there and says why, and
the servers after it are never touched.  The environment's record keeps the
release it runs and the one before (:mod:`gdl.envstore`); it changes only
when every server runs the new one, and the pillar follows it, so a later
``gdl.build`` keeps what the last deploy or rollback chose.

The runner drives these steps through :class:`gdl.flows.context.SaltOps` rather
than an orchestrate file: the loop over batches stops at the first failure
and rolls one server back, which is plain code here and would be a web of
``onfail`` requisites in an SLS.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from gdl import apps, envstore, naming, releases
from gdl.errors import GdlError, NotFound
from gdl.flows import converge
from gdl.flows.build import write_env_pillar
from gdl.flows.context import Context, require_record
from gdl.lock import env_lock
from gdl.progress import step
from gdl.providers.base import RUNNING, Server
from gdl.rollout import Member, Roller, Rollout
from gdl.spec import DeployRequest


def _index(server: Server) -> int:
    parsed = naming.parse_server_name(server.name)
    return parsed.index if parsed else 0


def _members(ctx: Context, record: envstore.EnvRecord) -> tuple[list[Server], tuple[Member, ...]]:
    """(the LBs, the app servers) of the environment, checked to answer."""
    servers = ctx.provider(record.provider).list_servers(record.app, record.env)
    env_id = naming.env_id(record.app, record.env)
    lb_servers = sorted(
        (s for s in servers if s.role == "lb" and s.state == RUNNING), key=lambda s: s.name
    )
    lbs = tuple(s.name for s in lb_servers)
    members = tuple(
        Member(s.name, s.address)
        for s in sorted(servers, key=_index)
        if s.role == "app" and s.state == RUNNING
    )
    fix = f"run salt-run gdl.build app={record.app} env={record.env} first"
    if len(lbs) < 2:
        raise GdlError(f"{env_id} has {len(lbs)} running load balancers, not 2", fix)
    if not members:
        raise GdlError(f"{env_id} has no running app server", fix)
    silent = sorted(
        {*lbs, *(m.name for m in members)}
        - ctx.salt.ping([*lbs, *(m.name for m in members)], timeout=5)
    )
    if silent:
        raise GdlError(f"the minions of {', '.join(silent)} do not answer", fix)
    return lb_servers, members


def _roll(
    ctx: Context,
    record: envstore.EnvRecord,
    version: str,
    batch: int,
    rebuilt: bool,
    verb: str,
) -> dict[str, Any]:
    """Roll the environment to ``version`` and record it; the verbs' common part."""
    settings = ctx.settings
    started = time.monotonic()
    previous = record.release or apps.load_manifest(settings.apps_dir, record.app).version
    lb_servers, members = _members(ctx, record)
    lbs = tuple(s.name for s in lb_servers)
    with step(ctx.progress, "modules on the load balancers") as note:
        synced = converge.sync_modules(ctx, record.app, record.env, lb_servers)
        note.text = f"synced to {len(synced)}" if synced else "current"
    # The release's archive and manifest values reach the pillar (gdl:releases)
    # before a server switches to it: the switch's pillar names the version alone.
    write_env_pillar(ctx, record.app, record.env)
    rollout = Rollout(
        app=record.app,
        env=record.env,
        version=version,
        previous=previous,
        health=str(releases.release_manifest(settings, record.app, version)["health"]),
        previous_health=str(releases.release_manifest(settings, record.app, previous)["health"]),
        lbs=lbs,
        members=members,
        batch=batch,
    )
    roller = Roller(ctx.salt, rollout, ctx.progress)
    # A server already on the release (an earlier deploy that stopped, or a
    # re-run) is left alone, unless the release's archive was just rebuilt.
    skip = [] if rebuilt else [m.name for m in members if roller.running_version(m) == version]
    if skip:
        ctx.progress(f"{', '.join(skip)}: already on release {version}")
    ctx.progress(f"{rollout.env_id}: {verb} {previous} -> {version}, {batch} server(s) at a time")
    switched = roller.run(skip=skip)
    # A record from before releases were recorded learns what ran until now.
    known = record if record.release else dataclasses.replace(record, release=previous)
    updated = known.with_release(version)
    if updated != record:
        envstore.save(settings.state_dir, updated)
    write_env_pillar(ctx, record.app, record.env)
    return {
        "result": True,
        "environment": rollout.env_id,
        "release": version,
        "previous_release": updated.previous_release,
        "switched": switched,
        "unchanged": skip,
        "changes": bool(switched) or updated != record,
        "seconds": round(time.monotonic() - started, 1),
    }


def deploy(ctx: Context, request: DeployRequest) -> dict[str, Any]:
    """Roll an environment to a new release of its app; see the module's docstring."""
    app, env = request.app, request.env
    settings = ctx.settings
    require_record(settings, app, env)
    with env_lock(settings.lock_dir, app, env, "deploy"), ctx.follow(app, env):
        record = require_record(settings, app, env)
        with step(ctx.progress, f"{request.env_id}: release of {app}") as note:
            target, rebuilt = releases.prepare_release(
                settings, app, request.version, request.source
            )
            note.text = f"{target}, {'built' if rebuilt else 'built before'}"
        return _roll(ctx, record, target, request.batch, rebuilt, "deploying")


def rollback(ctx: Context, app: str, env: str, batch: int = 1) -> dict[str, Any]:
    """Roll environment (app, env) back to the release it ran before the last deploy."""
    size = batch
    settings = ctx.settings
    require_record(settings, app, env)
    with env_lock(settings.lock_dir, app, env, "rollback"), ctx.follow(app, env):
        record = require_record(settings, app, env)
        env_id = naming.env_id(app, env)
        target = record.previous_release
        if target is None:
            raise NotFound(
                f"{env_id} has no previous release to return to",
                f"it has run {record.release or 'one release'} only; deploy one with "
                f"salt-run gdl.deploy app={app} env={env}",
            )
        if not releases.release_exists(settings, app, target):
            raise NotFound(
                f"release {target} of {app} is not on the master any more",
                f"deploy a release by its directory: salt-run gdl.deploy app={app} env={env} "
                "source=...",
            )
        return _roll(ctx, record, target, size, False, "rolling back")
