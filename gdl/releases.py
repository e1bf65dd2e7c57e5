"""App releases on the master: which one a build installs, which one a deploy asks for.

A release is built by :mod:`gdl.apps` into the master's files directory, where
``salt://`` serves it to the app servers; this module decides which release an
environment needs and makes sure it is there.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from gdl import apps, envstore, naming
from gdl.config import Settings
from gdl.errors import InvalidRequest, NotFound


def release_manifest(settings: Settings, app: str, version: str) -> dict[str, Any]:
    """The manifest a built release carries (beside its archive), else the app's own."""
    path = apps.release_manifest_path(apps.files_dir(settings), app, version)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        data = None
    if isinstance(data, dict) and data.get("health"):
        return data
    return apps.load_manifest(settings.apps_dir, app).as_dict()


def release_exists(settings: Settings, app: str, version: str) -> bool:
    return apps.release_path(apps.files_dir(settings), app, version).is_file()


def prepare_release(
    settings: Settings,
    app: str,
    version: str | None,
    source: str | Path | None,
    builder: Callable[..., apps.Release] | None = None,
) -> tuple[str, bool]:
    """Build or find the release a deploy asks for: (its version, whether its archive changed).

    ``source`` is a directory holding a release of the app (its own
    app.yaml); without it the release is ``apps/<app>``'s.  ``version``,
    when given, must be the source's version, or, without a source, the
    version of ``apps/<app>`` or of a release already built on the master.
    """
    if source is not None:
        path = Path(str(source)).expanduser()
        if not path.is_dir():
            raise InvalidRequest(
                f"source={source} is not a directory", f"give the directory of a release of {app}"
            )
        manifest = apps.load_manifest_from(path, app)
        if version is not None and version != manifest.version:
            raise InvalidRequest(
                f"version={version} disagrees with {path / apps.MANIFEST_NAME} "
                f"(version {manifest.version})",
                "drop version= or fix the manifest",
            )
        build = builder or apps.build_release_of
        release = build(manifest, apps.files_dir(settings), apps.wheel_cache_dir(settings))
        return release.version, release.changed
    manifest = apps.load_manifest(settings.apps_dir, app)
    if version is None or version == manifest.version:
        build = builder or apps.build_release_of
        release = build(manifest, apps.files_dir(settings), apps.wheel_cache_dir(settings))
        return release.version, release.changed
    if release_exists(settings, app, version):
        return version, False
    built = apps.list_releases(apps.files_dir(settings), app)
    others = f", or use one of {', '.join(built)}" if built else ""
    raise InvalidRequest(
        f"release {version} of {app} is not on the master",
        f"give source= the directory holding it{others}",
    )


def ensure_build_release(
    settings: Settings, record: envstore.EnvRecord, manifest: apps.AppManifest
) -> tuple[envstore.EnvRecord, str]:
    """The release a build installs, made ready: (the record naming it, its version).

    A new environment takes ``apps/<app>``'s version; one a deploy or rollback
    moved keeps the release it runs, so a re-run of the build never undoes them.
    """
    if record.release is None:
        record = record.with_release(manifest.version)
    release = record.release or manifest.version
    if release == manifest.version:
        apps.build_release_for(settings, manifest.name)
    elif not release_exists(settings, manifest.name, release):
        raise NotFound(
            f"{naming.env_id(record.app, record.env)} runs release {release} of "
            f"{manifest.name}, which is not on the master any more",
            f"deploy a release: salt-run gdl.deploy app={record.app} env={record.env}",
        )
    return record, release
