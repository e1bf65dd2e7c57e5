"""``gdl.destroy``: remove everything an environment owns, and the steps of ``orch/destroy.sls``.

Destroy never needs state the build might not have written: it finds servers at
the provider, keys and cached data on the master, and removes a half-made
environment as completely as a whole one.
"""

from __future__ import annotations

from typing import Any

from gdl import applied, certs, envstore, naming, pillar, servers
from gdl.errors import NotFound
from gdl.flows.build import master_keys
from gdl.flows.context import Context, env_provider
from gdl.lock import env_lock, remove_lock_file
from gdl.progress import step


def destroy(
    ctx: Context, app: str, env: str, provider: str | None = None, test: bool = False
) -> dict[str, Any]:
    """Remove everything environment (app, env) owns; a half-made one's too.

    An environment of which nothing at all exists is refused: a mistyped name
    must not read as a finished destroy (orch/destroy.sls stays idempotent).
    """
    chosen = env_provider(ctx, app, env, provider)
    found = chosen.list_servers(app, env)
    minion_ids = master_keys(ctx).env_minions(app, env)
    record = envstore.load(ctx.settings.state_dir, app, env)
    network = chosen.find_env(app, env)
    pillar_left = any(p.exists() for p in pillar.pillar_files(ctx.settings.pillar_dir, app, env))
    if not (found or minion_ids or record or network or pillar_left):
        raise NotFound(
            f"environment {naming.env_id(app, env)} does not exist, there is nothing to destroy",
            "check app= and env= against salt-run gdl.list",
        )
    if test:
        return {
            "result": True,
            "test": True,
            "environment": naming.env_id(app, env),
            "remove": sorted({s.name for s in found} | minion_ids),
            "network": bool(network),
            "record": record is not None,
        }
    with env_lock(ctx.settings.lock_dir, app, env, "destroy"), ctx.follow(app, env):
        removed = _teardown(ctx, app, env, chosen.name)
    return {
        "result": True,
        "environment": naming.env_id(app, env),
        "removed": removed,
        "changes": bool(removed or minion_ids or record or network),
    }


def remove_all(ctx: Context, app: str, env: str, provider: str | None = None) -> list[str]:
    """Delete every server of the environment (the runner holds the lock)."""
    return _remove_servers(ctx, app, env, provider)


def teardown(ctx: Context, app: str, env: str, provider: str | None = None) -> None:
    """Remove every server, then the shared parts, keys, pillar and record.

    orch/destroy.sls runs this as its one step, so a single hold of the lock
    (the runner takes it) covers the whole destroy.
    """
    _teardown(ctx, app, env, provider)


def _remove_servers(ctx: Context, app: str, env: str, provider: str | None) -> list[str]:
    chosen = env_provider(ctx, app, env, provider)
    names = [s.name for s in chosen.list_servers(app, env)]
    with step(ctx.progress, f"servers of {naming.env_id(app, env)}") as note:
        for name in names:
            ctx.progress(f"deleting {name} ...")
        deleted = servers.remove(chosen, master_keys(ctx), names, progress=ctx.progress)
        note.text = f"{len(deleted)} deleted"
    return deleted


def _teardown(ctx: Context, app: str, env: str, provider: str | None) -> list[str]:
    """Servers first (a half-made build's too), then the shared parts; returns the deleted."""
    removed = _remove_servers(ctx, app, env, provider)
    chosen = env_provider(ctx, app, env, provider)
    with step(ctx.progress, f"network parts, keys, pillar and record of {naming.env_id(app, env)}"):
        chosen.teardown_env(app, env)
        minion_keys = master_keys(ctx)
        minion_keys.forget(*minion_keys.env_minions(app, env), *minion_keys.env_cached(app, env))
        pillar.remove(ctx.settings.pillar_dir, app, env)
        certs.remove_env_cert(ctx.settings.state_dir, app, env)
        envstore.remove(ctx.settings.state_dir, app, env)
        applied.remove(ctx.settings.state_dir, app, env)
        remove_lock_file(ctx.settings.lock_dir, app, env)
    return removed
