"""``gdl.status`` and ``gdl.list``: what exists, read from the providers and the minions."""

from __future__ import annotations

from typing import Any

from gdl import envstore, naming, tls
from gdl.flows.context import Context, env_url, require_record
from gdl.plan import desired_names


def status(ctx: Context, app: str, env: str) -> dict[str, Any]:
    """Servers, who holds the VIP, and each backend's health in haproxy."""
    record = require_record(ctx.settings, app, env)
    provider = ctx.provider(record.provider)
    found = provider.list_servers(app, env)
    network = provider.find_env(app, env)
    lbs = [s.name for s in found if s.role == "lb"]
    answering = ctx.salt.ping(lbs + [s.name for s in found if s.role == "app"], timeout=5)
    result: dict[str, Any] = {
        "environment": naming.env_id(app, env),
        "provider": record.provider,
        "url": env_url(network, https=record.tls != "off") if network else None,
        "vip": network.vip if network else None,
        "requested": {"servers": record.servers, "size": record.size},
        # Servers the request needs that the provider does not have (lost, or never made).
        "missing": sorted(set(desired_names(app, env, record.servers)) - {s.name for s in found}),
        "servers": [
            {**s.as_dict(), "minion": s.name in answering}
            for s in sorted(found, key=lambda s: s.name)
        ],
    }
    result["tls"] = tls.describe(ctx.settings.state_dir, record)
    warnings = provider.placement_warnings(app, env) if lbs else []
    if warnings:
        result["warnings"] = warnings
    if network:
        result.update(ctx.salt.lb_status([n for n in lbs if n in answering], network.vip))
    return result


def list_environments(ctx: Context) -> list[dict[str, Any]]:
    """Every environment found at the providers, with what was asked of it."""
    records = {(r.app, r.env): r for r in envstore.list_records(ctx.settings.state_dir)}
    names = {ctx.settings.provider} | {r.provider for r in records.values()}
    found: dict[tuple[str, str], dict[str, Any]] = {}

    def entry(app: str, env: str, provider: str) -> dict[str, Any]:
        return found.setdefault(
            (app, env),
            {"app": app, "env": env, "provider": provider, "app_servers": 0, "lbs": 0},
        )

    for name in sorted(names):
        for server in ctx.provider(name).list_servers():
            entry(server.app, server.env, name)[
                "app_servers" if server.role == "app" else "lbs"
            ] += 1
    for (app, env), record in records.items():
        entry(app, env, record.provider)["requested"] = record.servers
    return [found[key] for key in sorted(found)]
