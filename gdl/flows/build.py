"""``gdl.build``: converge an environment to a request, and the steps ``orch/build.sls`` runs.

The runner validates the request, takes the environment's lock, starts the missing
app servers and hands over to ``orch/build.sls``, which sequences the steps below
and those of :mod:`gdl.flows.converge` (the VRRP pair through salt-cloud, the
pillar, each role's minions and roles, the surplus, the VIP check).  Each step finds
what it needs from the provider and the environment's record, never from memory
of an earlier step, so any step can be re-run on its own.
"""

from __future__ import annotations

import dataclasses
import json
import time
import urllib.error
import urllib.request
from typing import Any

from gdl import applied, apps, envstore, keys, lbcalls, naming, pillar, releases, servers, tls
from gdl.errors import GdlError, NotFound
from gdl.flows import converge
from gdl.flows.context import Context, env_url, require_record, timed_step
from gdl.lock import env_lock
from gdl.plan import Plan, desired_names, make_plan
from gdl.progress import named, step
from gdl.providers.base import RUNNING, EnvNetwork, Provider, Server
from gdl.saltops import profile_size
from gdl.spec import EnvSpec

VIP_TIMEOUT = 60  # seconds for the VIP to serve the app's health check
SUMMARY_OUTPUTTER = "gdl_summary"  # _output/gdl_summary.py
# orch/build.sls drains and removes surplus app servers only while due-surplus.json exists.
SURPLUS_RUN = "surplus"


def build(
    ctx: Context,
    spec: EnvSpec,
    test: bool = False,
    tls_request: tls.TlsRequest | None = None,
    lb_tuning: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Converge environment (app, env) to ``spec``; with ``test`` only say what would change.

    ``tls_request`` (checked by :func:`gdl.tls.parse_request`) changes the
    environment's HTTPS choice; None keeps it.  ``lb_tuning`` holds the load
    balancers' tuning arguments given (checked by :func:`gdl.tuning.parse_lb_tuning`);
    the record keeps them for later builds.
    """
    manifest = apps.load_manifest(ctx.settings.apps_dir, spec.app)
    provider = ctx.provider(spec.provider)
    # The VRRP pair is made through its salt-cloud profile: its size is checked too.
    lb_size = profile_size(ctx.settings.opts, f"gdl-{spec.provider}-lb")
    provider.check(dataclasses.replace(spec, lb_size=lb_size) if lb_size else spec)
    if test:
        plan = current_plan(ctx, provider, spec.app, spec.env, spec.servers)
        return {
            "result": True,
            "test": True,
            "environment": spec.env_id,
            "changes": plan.changes,
            "plan": plan.describe(),
        }

    started = time.monotonic()
    with env_lock(ctx.settings.lock_dir, spec.app, spec.env, "build") as lock_token:
        # Under the lock: a server another build was still booting is judged as it is now.
        plan = current_plan(ctx, provider, spec.app, spec.env, spec.servers)
        record = envstore.load(ctx.settings.state_dir, spec.app, spec.env)
        if record is not None and record.provider != spec.provider:
            raise GdlError(
                f"{spec.env_id} lives on provider {record.provider}, not {spec.provider}",
                f"destroy it first, or build with provider={record.provider}",
            )
        if record is None:
            record = envstore.new_record(spec.app, spec.env, spec.provider, spec.servers, spec.size)
        else:
            record = record.with_request(spec.servers, spec.size)
        if spec.vrrp_profile is not None:
            record = record.with_vrrp_profile(spec.vrrp_profile)
        record = tls.applied(record, tls_request)
        if lb_tuning:
            record = record.with_lb_tuning(lb_tuning)
        # Written before anything is made: destroy must find a half-made environment.
        envstore.save(ctx.settings.state_dir, record)

        with ctx.follow(spec.app, spec.env):
            ctx.progress(f"{spec.env_id}: preparing the environment's network parts")
            network = provider.ensure_env(spec.app, spec.env)
            release = record.release or manifest.version
            with step(ctx.progress, f"{spec.env_id}: release {release} of {spec.app}"):
                record, release = releases.ensure_build_release(ctx.settings, record, manifest)
            envstore.save(ctx.settings.state_dir, record)

            make_servers(ctx, provider, record, network, plan.of_role("app"))

            if not plan.changes and not pillar_and_due_roles(ctx, spec.app, spec.env)["due"]:
                # Every server is there and no role is due: the orchestration would only
                # find that out again, asking each minion. What remains is the VIP check.
                ctx.progress(f"{spec.env_id}: nothing to change, no orchestration needed")
                check_vip(ctx, spec.app, spec.env)
            else:
                with step(ctx.progress, f"{spec.env_id}: orchestration orch.build"):
                    # The orchestration's runner steps present the token: they run under
                    # this lock, anything else on the environment meanwhile is refused.
                    ok, result = ctx.salt.orchestrate(
                        "orch.build",
                        {"app": spec.app, "env": spec.env, "lock_token": lock_token},
                        test=False,
                    )
                    if not ok:
                        raise ctx.state_runs.failure(spec.env_id) or orchestration_failure(
                            spec.env_id, result
                        )
        made = provider.list_servers(spec.app, spec.env)
    return {
        "url": env_url(network, https=record.tls != "off"),
        "result": True,
        "environment": spec.env_id,
        "vip": network.vip,
        "public_address": network.public_address,
        "servers": [s.as_dict() for s in sorted(made, key=lambda s: s.name)],
        "changes": plan.changes,
        "plan": plan.describe(),
        "seconds": round(time.monotonic() - started, 1),
        # How salt-run prints this return (unless --out says otherwise): the URL first.
        "outputter": SUMMARY_OUTPUTTER,
    }


def make_servers(
    ctx: Context,
    provider: Provider,
    record: envstore.EnvRecord,
    network: EnvNetwork,
    plan: Plan,
) -> list[str]:
    """Replace the plan's broken servers and make its missing ones.

    Their minions are not waited for here: the orchestration's app steps wait for
    them (:func:`gdl.flows.converge.minions_ready`) while the VRRP pair is made.
    """
    minion_keys = master_keys(ctx)
    if plan.replace:
        ctx.progress(f"replacing broken servers: {', '.join(plan.replace)}")
        servers.remove(provider, minion_keys, plan.replace, progress=ctx.progress)
    names = list(plan.create + plan.replace)
    if not names:
        return names
    with step(ctx.progress, f"app servers {named(names)}"):
        servers.make(
            provider,
            minion_keys,
            [
                servers.NewServer(name, record.app, record.env, _role(name), record.size)
                for name in names
            ],
            master_address=network.master_address,
            progress=ctx.progress,
        )
    return names


def current_plan(
    ctx: Context, provider: Provider, app: str, env: str, app_servers: int, role: str = ""
) -> Plan:
    """The plan from the servers there now; a server whose minion never joined is replaced.

    With ``role``, only that role's part, and only its servers are judged: the app
    servers this build just started are not asked whether they joined while the
    VRRP pair is planned (a new minion cannot answer yet, and the question waits).
    """
    existing = provider.list_servers(app, env)
    judged = [s for s in existing if not role or s.role == role]
    silent = servers.never_joined(master_keys(ctx), ctx.salt, judged)
    plan = make_plan(app, env, app_servers, existing, silent)
    return plan.of_role(role) if role else plan


def master_keys(ctx: Context) -> keys.MasterKeys:
    return keys.MasterKeys(ctx.settings.master_opts)


def _role(name: str) -> str:
    parsed = naming.parse_server_name(name)
    return parsed.role if parsed else "app"


# -- the steps of orch/build.sls -----------------------------------------------------------


@timed_step("VRRP pair", lambda made: f"{len(made['created'])} created")
def ensure_vrrp_pair(ctx: Context, app: str, env: str) -> dict[str, Any]:
    """Make the missing or broken load balancers through salt-cloud.

    Their minions are waited for by the orchestration's LB steps, beside the app
    servers' (:func:`gdl.flows.converge.minions_ready`).
    """
    record = require_record(ctx.settings, app, env)
    provider = ctx.provider(record.provider)
    plan = current_plan(ctx, provider, app, env, record.servers, role="lb")
    if plan.replace:
        ctx.progress(f"replacing broken servers: {', '.join(plan.replace)}")
        servers.remove(provider, master_keys(ctx), plan.replace, progress=ctx.progress)
    missing = list(plan.create + plan.replace)
    if missing:
        for name in missing:
            ctx.progress(f"creating {name} (VRRP pair) ...")
        # app, env and role come from each name, the size from the profile; the
        # profile may wait for each minion, the build waits for them in a later step.
        # The bound is generous (a server made and its minion booted): it is only there
        # so that a hung salt-cloud never holds the environment's lock.
        ctx.salt.cloud_create(
            f"gdl-{record.provider}-lb",
            missing,
            {"wait_for_minion": False},
            timeout=provider.server_timeout + provider.minion_timeout,
        )
        for warning in provider.placement_warnings(app, env):
            ctx.progress(f"warning: {warning}")
    return {"created": missing}


def _changed(changed: bool) -> str:
    return "changed" if changed else "unchanged"


@timed_step("pillar", _changed)
def write_env_pillar(ctx: Context, app: str, env: str) -> bool:
    """Write the environment's pillar from what the provider reports now."""
    return _write_pillar(ctx, app, env)[0]


@timed_step(
    "pillar and roles due",
    lambda made: (
        f"{_changed(made['changed'])}; due: {', '.join(made['due']) or 'none'}"
        + (f"; surplus: {', '.join(made['surplus'])}" if made["surplus"] else "")
    ),
)
def pillar_and_due_roles(ctx: Context, app: str, env: str) -> dict[str, Any]:
    """Write the pillar, then find which role runs this build must make (gdl.flows.converge).

    The provider knows every server's address before its minion is up: the
    roles' inputs are complete as soon as the VRRP pair is made.
    """
    changed, extra = _write_pillar(ctx, app, env)
    # The surplus steps run only while this file says there is surplus: a build
    # without any starts no process for them.
    marker = applied.due_path(ctx.settings.state_dir, app, env, SURPLUS_RUN)
    if extra:
        applied.write(marker, {"servers": extra})
    else:
        marker.unlink(missing_ok=True)
    return {"changed": changed, "due": converge.mark_due_roles(ctx, app, env), "surplus": extra}


def _write_pillar(ctx: Context, app: str, env: str) -> tuple[bool, list[str]]:
    """Write the pillar; (whether it changed, the app servers beyond the requested count)."""
    record = require_record(ctx.settings, app, env)
    provider = ctx.provider(record.provider)
    network = provider.find_env(app, env)
    if network is None:
        raise NotFound(
            f"the network parts of {naming.env_id(app, env)} are missing",
            f"run salt-run gdl.build app={app} env={env} again to make them",
        )
    found = provider.list_servers(app, env)
    running = [s for s in found if s.state == RUNNING]
    wanted = set(desired_names(app, env, record.servers))
    in_rotation = [s.name for s in running if s.role == "app" and s.name in wanted]
    built = pillar.built_releases(ctx.settings, app)
    # The certificate names the VIP and the address users reach (a floating IP).
    https = tls.lb_pillar(ctx.settings.state_dir, record, [network.vip, network.public_address])
    changed = pillar.write(
        ctx.settings.pillar_dir, record, network, running, in_rotation, built, tls=https
    )
    return changed, _beyond_count(record, found)


def surplus(ctx: Context, app: str, env: str) -> list[str]:
    """App servers beyond the requested count, to drain and remove."""
    record = require_record(ctx.settings, app, env)
    return _beyond_count(record, ctx.provider(record.provider).list_servers(app, env))


def _beyond_count(record: envstore.EnvRecord, found: list[Server]) -> list[str]:
    """Of the servers ``found``, the app servers beyond the record's requested count."""
    plan = make_plan(record.app, record.env, record.servers, found)
    return list(plan.of_role("app").remove)


@timed_step("drain of surplus servers", lambda drained: f"{len(drained)} drained")
def drain_surplus(ctx: Context, app: str, env: str) -> list[str]:
    """Drain the app servers beyond the requested count on every LB; the names drained.

    orch/build.sls runs this after the app role and before the lb role, which
    then leaves them out of haproxy; :func:`remove_surplus` deletes them last.
    A server haproxy does not know (a re-run after the lb role took it out)
    gets no requests already.
    """
    record = require_record(ctx.settings, app, env)
    found = ctx.provider(record.provider).list_servers(app, env)
    extra = _beyond_count(record, found)
    lbs = sorted(s.name for s in found if s.role == "lb" and s.state == RUNNING)
    for server in extra:
        ctx.progress(f"draining {server} on {', '.join(lbs)}")
        lbcalls.drain(
            ctx.salt,
            lbs,
            server,
            "check salt-run gdl.status, then run the build again",
            unknown_is_done=True,
        )
    return extra


@timed_step("removal of surplus servers", lambda removed: f"{len(removed)} deleted")
def remove_surplus(ctx: Context, app: str, env: str) -> list[str]:
    """Delete the app servers beyond the requested count (drained before) and their keys."""
    record = require_record(ctx.settings, app, env)
    extra = surplus(ctx, app, env)
    for name in extra:
        ctx.progress(f"deleting {name} ...")
    removed = servers.remove(
        ctx.provider(record.provider), master_keys(ctx), extra, progress=ctx.progress
    )
    applied.due_path(ctx.settings.state_dir, app, env, SURPLUS_RUN).unlink(missing_ok=True)
    return removed


@timed_step("VIP check", lambda seen: f"{seen['url']} served by {seen['served_by']}")
def check_vip(ctx: Context, app: str, env: str, timeout: float = VIP_TIMEOUT) -> dict[str, Any]:
    """Wait until the environment's address serves the app's health check."""
    record = require_record(ctx.settings, app, env)
    network = ctx.provider(record.provider).find_env(app, env)
    if network is None:
        raise NotFound(f"{naming.env_id(app, env)} has no VIP", "run the build again")
    manifest = apps.load_manifest(ctx.settings.apps_dir, app)
    url = f"http://{network.public_address}{manifest.health}"
    context = None
    if record.tls != "off":
        url = f"https://{network.public_address}{manifest.health}"
        context = tls.client_context(ctx.settings.state_dir, record)
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            # The URL is built above: always http(s)://, never a file: or other scheme.
            with urllib.request.urlopen(url, timeout=3, context=context) as response:  # noqa: S310  # nosec B310
                body = json.loads(response.read().decode() or "{}")
                return {"url": url, "status": response.status, "served_by": body.get("host")}
        except (OSError, ValueError, urllib.error.URLError) as exc:
            last = str(exc)
        time.sleep(0.5)
    raise GdlError(
        f"{url} did not answer within {timeout:.0f} s ({last})",
        f"see salt-run gdl.status app={app} env={env}",
    )


def orchestration_failure(env_id: str, result: Any) -> GdlError:
    """One line for a failed orchestration: the step that failed first, and what to do.

    A runner step's return is already gdl's line (what failed, what to do); a
    role step's comment names the minions it failed on, and its job's returns
    say why.  Steps skipped because an earlier one failed are not the cause.
    """
    again = "fix the cause and run the same build again: it continues where it stopped"
    steps = result.get("data", result) if isinstance(result, dict) else None
    failed, errors = [], []
    for states in steps.values() if isinstance(steps, dict) else [steps]:
        if isinstance(states, dict):
            failed += [
                s for s in states.values() if isinstance(s, dict) and s.get("result") is False
            ]
        elif isinstance(states, (str, list)):
            errors.append(_one_line(states, 300))  # the orchestration did not render
    if not failed:
        detail = "; ".join(errors)[:300]
        return GdlError(
            f"{env_id}: the orchestration failed ({detail or 'no step reported why'})",
            f"see the master log, then {again}",
        )
    first_failures = [s for s in failed if "requisite failed" not in str(s.get("comment"))]
    step = min(first_failures or failed, key=lambda s: s.get("__run_num__", 0))
    name = step.get("__id__", "a step")
    changes = step.get("changes")
    runner_line = changes.get("return") if isinstance(changes, dict) else None
    if isinstance(runner_line, str) and runner_line:
        # The step's own refusal says what to do: its first line is the line, and what
        # follows (a silent server's console) stays below it.
        first, *evidence = runner_line.splitlines()
        return GdlError(
            f"{env_id}: step {name} failed: {_one_line(first, 400)}", details=evidence[:80]
        )
    jid = step.get("__jid__")
    look = f"salt-run jobs.lookup_jid {jid} shows why; " if jid else ""
    return GdlError(
        f"{env_id}: step {name} failed ({_one_line(step.get('comment', ''), 300)})",
        f"{look}{again}",
    )


def _one_line(value: Any, limit: int) -> str:
    if isinstance(value, list):
        value = "; ".join(str(item) for item in value)
    return " ".join(str(value).split())[:limit]
