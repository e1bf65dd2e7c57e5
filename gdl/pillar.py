"""Each environment's pillar, written by the runner under the master's state dir.

Two files per environment under ``<state_dir>/pillar/gdl/envs/``: ``<app>-<env>.sls``
for every server of the environment, and ``lb/<app>-<env>.sls`` with the VRRP
secret and the HTTPS certificate and key, which ``pillar/top.sls`` gives to the
load balancers only.  Both use the ``yaml`` renderer alone, so no value is ever
run through Jinja.

The pillar holds everything the roles need that the master knows: the
servers, the VRRP settings resolved from the environment's profile (checked by
:func:`gdl.spec.vrrp_settings`), and every release of the app built on the
master with where its archive is served and the values of its manifest, so
the states never ask the fileserver anything while they render.
``pillar/pillar.example`` shows every key.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from gdl import apps, naming, release_build, releases, spec, tuning
from gdl.envstore import EnvRecord
from gdl.errors import GdlError
from gdl.providers.base import EnvNetwork, Server

if TYPE_CHECKING:
    from gdl.config import Settings


def _by_index(server: Server) -> int:
    parsed = naming.parse_server_name(server.name)
    return parsed.index if parsed else 0


def members(servers: Iterable[Server], role: str) -> list[dict[str, Any]]:
    chosen = sorted((s for s in servers if s.role == role), key=_by_index)
    return [{"name": s.name, "address": s.address} for s in chosen]


# The values of an app's manifest the roles read (gdl.apps.AppManifest).
MANIFEST_KEYS = ("wsgi", "requirements", "static", "health")


def built_releases(settings: Settings, app: str) -> dict[str, dict[str, Any]]:
    """Every release of ``app`` built on the master, by version: what the roles need of it.

    Each carries its archive's ``salt://`` address, its SHA-256 from the
    ``.sha256`` file beside it, the free space a server needs to take it
    (``room``), how its virtualenv is made (``layout``: ``site-packages``, or
    ``wheelhouse`` for an archive of an older gdl), and the values of its own
    manifest (else the app's). A release without its hash file cannot be
    checked by the servers, and is left out.
    """
    files_dir = release_build.files_dir(settings)
    found: dict[str, dict[str, Any]] = {}
    for version in release_build.list_releases(files_dir, app):
        archive = release_build.release_path(files_dir, app, version)
        try:
            # "<hex>  <file name>", as gdl.release_build writes it.
            digest = archive.with_name(archive.name + ".sha256").read_text().split()[0]
            manifest = releases.release_manifest(settings, app, version)
        except (OSError, IndexError, GdlError):
            continue
        if not apps.release_values_are_safe(manifest):
            continue  # never handed to the states: a value a shell or nginx would read
        facts = releases.archive_facts(archive, digest)
        found[version] = {
            "source": release_build.release_url(app, version),
            "sha256": digest,
            "room": facts.room,
            "layout": facts.layout,
            **{key: manifest.get(key) for key in MANIFEST_KEYS},
        }
    return found


def env_pillar(
    record: EnvRecord,
    network: EnvNetwork,
    servers: Iterable[Server],
    app_servers: Iterable[str],
    app_releases: dict[str, dict[str, Any]] | None = None,
    tls: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(pillar for every server, pillar for the load balancers only).

    ``app_servers`` names the app servers that belong in the haproxy
    backend: the desired ones that exist, not those about to be removed.
    ``app_releases`` is :func:`built_releases` of the environment's app.
    ``tls`` is :func:`gdl.tls.lb_pillar`: it holds the certificate's key,
    so it goes to the load balancers only.
    """
    servers = list(servers)
    in_rotation = set(app_servers)
    common = {
        "gdl": {
            "app": record.app,
            "env": record.env,
            # The release the app servers run: the record's, set by build, deploy
            # and rollback. A deploy applies the app role with another version in
            # its pillar: every release built is in `releases`.
            "version": record.release or "",
            "releases": dict(app_releases or {}),
            "vip": network.vip,
            "servers": members((s for s in servers if s.name in in_rotation), "app"),
            "lbs": members(servers, "lb"),
            "vrrp": {
                "router_id": network.router_id,
                **spec.vrrp_settings(record.vrrp_profile),
            },
        }
    }
    # The load balancers' tuning given to builds (gdl.tuning); the role's defaults otherwise.
    haproxy = tuning.haproxy_settings(record.lb_tuning)
    if haproxy:
        common["gdl"]["roles"] = {"lb": {"haproxy": haproxy}}
    lb_only: dict[str, Any] = {"gdl": {"vrrp": {"secret": record.vrrp_secret}}}
    if tls is not None:
        lb_only["gdl"]["tls"] = tls
    return common, lb_only


def env_dir(pillar_dir: str | os.PathLike[str]) -> Path:
    return Path(pillar_dir) / "gdl" / "envs"


def pillar_files(pillar_dir: str | os.PathLike[str], app: str, env: str) -> tuple[Path, Path]:
    # The secret has a directory of its own: a "-lb" suffix would meet the
    # common file of an environment whose name ends in "-lb".
    name = f"{naming.env_id(app, env)}.sls"
    return env_dir(pillar_dir) / name, env_dir(pillar_dir) / "lb" / name


def _write(path: Path, data: dict[str, Any]) -> bool:
    text = "#!yaml\n" + yaml.safe_dump(data, default_flow_style=False, sort_keys=True)
    try:
        if path.read_text() == text:
            return False
    except FileNotFoundError:
        pass
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    tmp.replace(path)
    return True


def write(
    pillar_dir: str | os.PathLike[str],
    record: EnvRecord,
    network: EnvNetwork,
    servers: Iterable[Server],
    app_servers: Iterable[str],
    app_releases: dict[str, dict[str, Any]] | None = None,
    tls: dict[str, Any] | None = None,
) -> bool:
    """Write the environment's pillar; True when a file changed."""
    common, lb_only = env_pillar(record, network, servers, app_servers, app_releases, tls)
    common_path, lb_path = pillar_files(pillar_dir, record.app, record.env)
    changed = _write(common_path, common)
    changed = _write(lb_path, lb_only) or changed
    return changed


def remove(pillar_dir: str | os.PathLike[str], app: str, env: str) -> bool:
    found = False
    for path in pillar_files(pillar_dir, app, env):
        if path.exists():
            path.unlink()
            found = True
    return found
