"""Build, destroy, status and list: the runner's verbs in plain Python.

The runner hands in a :class:`SaltOps` (the few things only a running master
can do: reach minions, run salt-cloud and orchestrate); everything else, the
order of the steps, what is checked before anything is made, what a re-run
keeps, lives here.  ``orch/build.sls`` sequences the steps below; each step
finds what it needs from the provider and the environment's record, never
from memory of an earlier step, so any step can be re-run on its own.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from gdl import envstore, keys, naming, pillar
from gdl.config import Settings
from gdl.errors import GdlError, NotFound, ProviderError
from gdl.lock import env_lock, remove_lock_file
from gdl.plan import Plan, desired_names, make_plan
from gdl.providers import get_provider
from gdl.providers.base import RUNNING, EnvNetwork, Provider, Server, ServerRequest
from gdl.spec import EnvSpec

Progress = Callable[[str], None]

VIP_TIMEOUT = 60  # seconds for the VIP to serve the app's health check


class SaltOps(Protocol):
    """What the workflow needs from a running Salt master."""

    def ping(self, minions: list[str], timeout: float) -> set[str]:
        """The minions that answered test.ping."""

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


def _env_provider(ctx: Context, app: str, env: str, provider: str | None = None) -> Provider:
    """The provider that holds an environment: the one asked for, else its record's."""
    if provider is None:
        record = envstore.load(ctx.settings.state_dir, app, env)
        provider = record.provider if record else ctx.settings.provider
    return ctx.provider(provider)


def _require_record(ctx: Context, app: str, env: str) -> envstore.EnvRecord:
    record = envstore.load(ctx.settings.state_dir, app, env)
    if record is None:
        raise NotFound(
            f"environment {naming.env_id(app, env)} does not exist",
            f"build it first: salt-run gdl.build app={app} env={env}",
        )
    return record


def _url(network: EnvNetwork) -> str:
    return f"http://{network.public_address}/"


# -- the verbs -----------------------------------------------------------------------------


def build(ctx: Context, spec: EnvSpec, test: bool = False) -> dict[str, Any]:
    """Converge environment (app, env) to ``spec``; with ``test`` only say what would change."""
    from gdl import apps

    manifest = apps.load_manifest(ctx.settings.apps_dir, spec.app)
    provider = ctx.provider(spec.provider)
    provider.check(spec)
    existing = provider.list_servers(spec.app, spec.env)
    plan = make_plan(spec.app, spec.env, spec.servers, existing)
    if test:
        return {
            "result": True,
            "test": True,
            "environment": spec.env_id,
            "changes": plan.changes,
            "plan": plan.describe(),
        }

    started = time.monotonic()
    with env_lock(ctx.settings.lock_dir, spec.app, spec.env, "build"):
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
        # Written before anything is made: destroy must find a half-made environment.
        envstore.save(ctx.settings.state_dir, record)

        ctx.progress(f"{spec.env_id}: preparing the environment's network parts")
        network = provider.ensure_env(spec.app, spec.env)
        # The release the environment runs: the last deploy's or rollback's,
        # else the manifest's (gdl/deploy.py); the pillar carries it to the servers.
        from gdl import deploy

        release = record.release or manifest.version
        ctx.progress(f"{spec.env_id}: building release {release} of {spec.app}")
        record, release = deploy.ensure_build_release(ctx.settings, record, manifest)
        envstore.save(ctx.settings.state_dir, record)

        app_plan = plan.of_role("app")
        replace_servers(ctx, provider, list(app_plan.replace))
        create_servers(ctx, provider, spec, network, list(app_plan.create + app_plan.replace))

        ok, result = ctx.salt.orchestrate(
            "orch.build", {"app": spec.app, "env": spec.env}, test=False
        )
        if not ok:
            raise GdlError(
                f"{spec.env_id}: the orchestration failed ({_first_failure(result)})",
                "fix the cause and run the same build again: it continues where it stopped",
            )
        servers = provider.list_servers(spec.app, spec.env)
    return {
        "result": True,
        "environment": spec.env_id,
        "url": _url(network),
        "vip": network.vip,
        "public_address": network.public_address,
        "servers": [s.as_dict() for s in sorted(servers, key=lambda s: s.name)],
        "changes": plan.changes,
        "plan": plan.describe(),
        "seconds": round(time.monotonic() - started, 1),
    }


def destroy(
    ctx: Context, app: str, env: str, provider: str | None = None, test: bool = False
) -> dict[str, Any]:
    """Remove everything environment (app, env) owns; a half-made one's too.

    An environment of which nothing at all exists is refused: a mistyped name
    must not read as a finished destroy (orch/destroy.sls stays idempotent).
    """
    chosen = _env_provider(ctx, app, env, provider)
    servers = chosen.list_servers(app, env)
    minion_keys = keys.env_minions(ctx.settings.pki_dir, app, env)
    record = envstore.load(ctx.settings.state_dir, app, env)
    network = chosen.find_env(app, env)
    pillar_left = any(p.exists() for p in pillar.pillar_files(ctx.settings.pillar_dir, app, env))
    if not (servers or minion_keys or record or network or pillar_left):
        raise NotFound(
            f"environment {naming.env_id(app, env)} does not exist, there is nothing to destroy",
            "check app= and env= against salt-run gdl.list",
        )
    if test:
        return {
            "result": True,
            "test": True,
            "environment": naming.env_id(app, env),
            "remove": sorted({s.name for s in servers} | minion_keys),
            "network": bool(network),
            "record": record is not None,
        }
    with env_lock(ctx.settings.lock_dir, app, env, "destroy"):
        removed = _teardown(ctx, app, env, chosen.name)
    return {
        "result": True,
        "environment": naming.env_id(app, env),
        "removed": removed,
        "changes": bool(removed or minion_keys or record or network),
    }


def status(ctx: Context, app: str, env: str) -> dict[str, Any]:
    """Servers, who holds the VIP, and each backend's health in haproxy."""
    record = _require_record(ctx, app, env)
    provider = ctx.provider(record.provider)
    servers = provider.list_servers(app, env)
    network = provider.find_env(app, env)
    lbs = [s.name for s in servers if s.role == "lb"]
    answering = ctx.salt.ping(lbs + [s.name for s in servers if s.role == "app"], timeout=5)
    result: dict[str, Any] = {
        "environment": naming.env_id(app, env),
        "provider": record.provider,
        "url": _url(network) if network else None,
        "vip": network.vip if network else None,
        "requested": {"servers": record.servers, "size": record.size},
        # Servers the request needs that the provider does not have (lost, or never made).
        "missing": sorted(set(desired_names(app, env, record.servers)) - {s.name for s in servers}),
        "servers": [
            {**s.as_dict(), "minion": s.name in answering}
            for s in sorted(servers, key=lambda s: s.name)
        ],
    }
    if network:
        result.update(ctx.salt.lb_status([n for n in lbs if n in answering], network.vip))
    return result


def list_environments(ctx: Context) -> list[dict[str, Any]]:
    """Every environment found at the providers, with what was asked of it."""
    records = {(r.app, r.env): r for r in envstore.list_records(ctx.settings.state_dir)}
    names = {ctx.settings.provider} | {r.provider for r in records.values()}
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for name in sorted(names):
        provider = ctx.provider(name)
        for server in provider.list_servers():
            entry = found.setdefault(
                (server.app, server.env),
                {
                    "app": server.app,
                    "env": server.env,
                    "provider": name,
                    "app_servers": 0,
                    "lbs": 0,
                },
            )
            entry["app_servers" if server.role == "app" else "lbs"] += 1
    for key, record in records.items():
        found.setdefault(
            key,
            {
                "app": record.app,
                "env": record.env,
                "provider": record.provider,
                "app_servers": 0,
                "lbs": 0,
            },
        )
        found[key]["requested"] = record.servers
    return [found[key] for key in sorted(found)]


# -- steps (orch/build.sls and orch/destroy.sls call these through the runner) --------------


def create_servers(
    ctx: Context, provider: Provider, spec: EnvSpec, network: EnvNetwork, names: list[str]
) -> list[Server]:
    """Make the named app servers in parallel with preseeded keys, and wait for their minions."""
    if not names:
        return []
    requests = []
    for name in names:
        pair = keys.preseed(ctx.settings.pki_dir, name)
        requests.append(
            ServerRequest(
                name=name,
                app=spec.app,
                env=spec.env,
                role="app",
                size=spec.size,
                minion_public_key=pair.public_pem,
                minion_private_key=pair.private_pem,
                master_address=network.master_address,
            )
        )
    for name in names:
        ctx.progress(f"creating {name} ...")
    try:
        made = provider.create_servers(requests, progress=ctx.progress)
    except GdlError:
        # The provider cleans up the servers it could not make; their keys go too,
        # so no accepted key outlives its server.
        present = {s.name for s in provider.list_servers(spec.app, spec.env)}
        for name in names:
            if name not in present:
                _forget_minion(ctx, name)
        raise
    wait_for_minions(ctx, names, provider.minion_timeout)
    return made


def replace_servers(ctx: Context, provider: Provider, names: list[str]) -> None:
    """Delete broken servers and their keys so they can be made again under the same names."""
    if names:
        ctx.progress(f"replacing broken servers: {', '.join(names)}")
        provider.delete_servers(names, progress=ctx.progress)
        for name in names:
            _forget_minion(ctx, name)


def wait_for_minions(ctx: Context, names: list[str], timeout: float) -> None:
    pending = set(names)
    deadline = time.monotonic() + timeout
    while pending:
        answered = ctx.salt.ping(sorted(pending), timeout=5)
        for name in sorted(answered & pending):
            ctx.progress(f"{name} ... ok")
        pending -= answered
        if not pending:
            return
        if time.monotonic() >= deadline:
            raise ProviderError(
                f"the minions of {', '.join(sorted(pending))} did not answer "
                f"within {timeout:.0f} s",
                "check the servers' console or log, then run the build again",
            )
        time.sleep(1)


def ensure_vrrp_pair(ctx: Context, app: str, env: str) -> dict[str, Any]:
    """Make the missing or broken load balancers through salt-cloud and wait for them."""
    record = _require_record(ctx, app, env)
    provider = ctx.provider(record.provider)
    plan = make_plan(app, env, record.servers, provider.list_servers(app, env)).of_role("lb")
    replace_servers(ctx, provider, list(plan.replace))
    missing = list(plan.create + plan.replace)
    if missing:
        for name in missing:
            ctx.progress(f"creating {name} (VRRP pair) ...")
        ctx.salt.cloud_create(
            f"gdl-{record.provider}-lb",
            missing,
            {"app": app, "env": env, "role": "lb", "size": record.size},
        )
    wait_for_minions(
        ctx, [naming.server_name("lb", i, app, env) for i in range(2)], provider.minion_timeout
    )
    return {"created": missing}


def write_env_pillar(ctx: Context, app: str, env: str) -> bool:
    """Write the environment's pillar from what the provider reports now."""
    record = _require_record(ctx, app, env)
    provider = ctx.provider(record.provider)
    network = provider.find_env(app, env)
    if network is None:
        raise NotFound(
            f"the network parts of {naming.env_id(app, env)} are missing",
            f"run salt-run gdl.build app={app} env={env} again to make them",
        )
    servers = [s for s in provider.list_servers(app, env) if s.state == RUNNING]
    wanted = set(desired_names(app, env, record.servers))
    in_rotation = [s.name for s in servers if s.role == "app" and s.name in wanted]
    return pillar.write(ctx.settings.pillar_dir, record, network, servers, in_rotation)


def surplus(ctx: Context, app: str, env: str) -> list[str]:
    """App servers beyond the requested count, to drain and remove."""
    record = _require_record(ctx, app, env)
    provider = ctx.provider(record.provider)
    plan: Plan = make_plan(app, env, record.servers, provider.list_servers(app, env))
    return list(plan.of_role("app").remove)


def remove_servers(
    ctx: Context, app: str, env: str, names: list[str], provider: str | None = None
) -> list[str]:
    """Delete servers of the environment and forget their minion keys."""
    owned = [n for n in names if _belongs(n, app, env)]
    chosen = _env_provider(ctx, app, env, provider)
    for name in owned:
        ctx.progress(f"deleting {name} ...")
    deleted = chosen.delete_servers(owned, progress=ctx.progress) if owned else []
    for name in owned:
        _forget_minion(ctx, name)
    return deleted


def remove_all(ctx: Context, app: str, env: str, provider: str | None = None) -> list[str]:
    """Delete every server of the environment (orch/destroy.sls's first step)."""
    with env_lock(ctx.settings.lock_dir, app, env, "destroy"):
        chosen = _env_provider(ctx, app, env, provider)
        names = [s.name for s in chosen.list_servers(app, env)]
        return remove_servers(ctx, app, env, names, provider=chosen.name)


def teardown(ctx: Context, app: str, env: str, provider: str | None = None) -> None:
    """Remove the environment's shared parts, keys, pillar and record."""
    with env_lock(ctx.settings.lock_dir, app, env, "destroy"):
        _teardown(ctx, app, env, provider)


def _teardown(ctx: Context, app: str, env: str, provider: str | None) -> list[str]:
    """Servers first (a half-made build's too), then the shared parts; returns the deleted."""
    chosen = _env_provider(ctx, app, env, provider)
    leftover = [s.name for s in chosen.list_servers(app, env)]
    removed = remove_servers(ctx, app, env, leftover, provider=chosen.name) if leftover else []
    ctx.progress(f"removing the network parts of {naming.env_id(app, env)}")
    chosen.teardown_env(app, env)
    for minion_id in keys.env_minions(ctx.settings.pki_dir, app, env):
        _forget_minion(ctx, minion_id)
    for minion_id in keys.cached_minions(ctx.settings.cache_dir):
        if _belongs(minion_id, app, env):
            keys.remove_cached_data(ctx.settings.cache_dir, minion_id)
    pillar.remove(ctx.settings.pillar_dir, app, env)
    envstore.remove(ctx.settings.state_dir, app, env)
    remove_lock_file(ctx.settings.lock_dir, app, env)
    return removed


def check_vip(ctx: Context, app: str, env: str, timeout: float = VIP_TIMEOUT) -> dict[str, Any]:
    """Wait until the environment's address serves the app's health check."""
    from gdl import apps

    record = _require_record(ctx, app, env)
    network = ctx.provider(record.provider).find_env(app, env)
    if network is None:
        raise NotFound(f"{naming.env_id(app, env)} has no VIP", "run the build again")
    manifest = apps.load_manifest(ctx.settings.apps_dir, app)
    url = f"http://{network.public_address}{manifest.health}"
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            # The URL is built above: always http://, never a file: or other scheme.
            with urllib.request.urlopen(url, timeout=3) as response:  # nosec B310
                body = json.loads(response.read().decode() or "{}")
                return {"url": url, "status": response.status, "served_by": body.get("host")}
        except (OSError, ValueError, urllib.error.URLError) as exc:
            last = str(exc)
        time.sleep(0.5)
    raise GdlError(
        f"{url} did not answer within {timeout:.0f} s ({last})",
        f"see salt-run gdl.status app={app} env={env}",
    )


def _forget_minion(ctx: Context, minion_id: str) -> None:
    """Remove a server's minion key and what the master cached of it."""
    keys.remove(ctx.settings.pki_dir, minion_id)
    keys.remove_cached_data(ctx.settings.cache_dir, minion_id)


def _belongs(name: str, app: str, env: str) -> bool:
    parsed = naming.parse_server_name(name)
    return parsed is not None and parsed.app == app and parsed.env == env


def _first_failure(result: Any) -> str:
    """The first failed step's comment in an orchestrate return, for one-line errors."""
    data = result
    if isinstance(data, dict) and "data" in data:
        data = data["data"]
    if isinstance(data, dict):
        for value in data.values():
            states = value if isinstance(value, dict) else {}
            for state in states.values():
                if isinstance(state, dict) and state.get("result") is False:
                    comment = " ".join(str(state.get("comment", "")).split())
                    return f"{state.get('__id__', 'a step')}: {comment[:300]}"
    return "see the master log"
