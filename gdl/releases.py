"""App releases on the master: which one a build installs, which one a deploy asks for.

A release archive is built by :mod:`gdl.release_build` from an app's manifest
(:mod:`gdl.apps`) into the master's files directory, where ``salt://`` serves
it to the app servers; this module decides which release an environment needs
and makes sure it is there.
"""

from __future__ import annotations

import contextlib
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gdl import apps, envstore, naming, release_build
from gdl.config import Settings
from gdl.errors import InvalidRequest, NotFound


def release_manifest(settings: Settings, app: str, version: str) -> dict[str, Any]:
    """The manifest a built release carries (beside its archive), else the app's own."""
    path = release_build.release_manifest_path(release_build.files_dir(settings), app, version)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        data = None
    if isinstance(data, dict) and data.get("health"):
        return data
    return apps.load_manifest(settings.apps_dir, app).as_dict()


BLOCK = 4096  # what a file or directory takes on a server's disk at least
# Free space a server keeps beyond the release: its minion must still write its
# job's files and logs, and return the job, once the release is unpacked.
JOB_HEADROOM = 16 << 20


def _blocks(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


# What a release archive carries for its virtualenv: its requirements installed
# (what gdl builds), or, from a gdl before that, the wheels pip installs them from.
SITE_PACKAGES = "site-packages"
WHEELHOUSE = "wheelhouse"


@dataclass(frozen=True)
class ArchiveFacts:
    """What the app role needs to know of a release archive before it fetches it."""

    room: int  # bytes a server needs free to take it, about; 0 when not measured
    layout: str  # SITE_PACKAGES or WHEELHOUSE: how its virtualenv is made


def archive_facts(archive: Path, sha256: str) -> ArchiveFacts:
    """The room a release ``archive`` needs on an app server, and its layout.

    The room is its minion's cached copy of the archive, the unpacked tree, the
    requirements copied again into the virtualenv with their byte code
    (counted as large as their sources), and :data:`JOB_HEADROOM`.  The layout
    is :data:`WHEELHOUSE` for an archive of an older gdl, which carries wheels
    and no ``site-packages/``.  Reading the archive costs a decompression, so
    both are kept beside it in a ``.room`` file that names the archive's
    SHA-256.  An archive that cannot be read is not measured (room 0): the
    server's own check of it refuses it.
    """
    kept = archive.with_name(archive.name + ".room")
    try:
        recorded, figure, layout = kept.read_text(encoding="utf-8").split()
        if recorded == sha256 and layout in (SITE_PACKAGES, WHEELHOUSE):
            return ArchiveFacts(int(figure), layout)
    except (OSError, ValueError):
        pass  # not there, or written by a gdl that kept the room alone
    unpacked = venv = 0
    tops: set[str] = set()
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            for member in tar:
                size = _blocks(member.size) if member.isfile() else BLOCK
                unpacked += size
                tops.add(member.name.split("/", 1)[0])
                if member.name.startswith(f"{SITE_PACKAGES}/") and member.isfile():
                    venv += size * (2 if member.name.endswith(".py") else 1)
    except (OSError, tarfile.TarError):
        return ArchiveFacts(0, SITE_PACKAGES)
    layout = WHEELHOUSE if WHEELHOUSE in tops and SITE_PACKAGES not in tops else SITE_PACKAGES
    figure = _blocks(archive.stat().st_size) + unpacked + venv + JOB_HEADROOM
    with contextlib.suppress(OSError):  # else computed again next time
        kept.write_text(f"{sha256} {figure} {layout}\n", encoding="utf-8")
    return ArchiveFacts(figure, layout)


def release_exists(settings: Settings, app: str, version: str) -> bool:
    return release_build.release_path(release_build.files_dir(settings), app, version).is_file()


def prepare_release(
    settings: Settings,
    app: str,
    version: str | None,
    source: str | Path | None,
    builder: Callable[..., release_build.Release] | None = None,
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
        build = builder or release_build.build_release_of
        release = build(
            manifest, release_build.files_dir(settings), release_build.wheel_cache_dir(settings)
        )
        return release.version, release.changed
    manifest = apps.load_manifest(settings.apps_dir, app)
    if version is None or version == manifest.version:
        build = builder or release_build.build_release_of
        release = build(
            manifest, release_build.files_dir(settings), release_build.wheel_cache_dir(settings)
        )
        return release.version, release.changed
    if release_exists(settings, app, version):
        return version, False
    built = release_build.list_releases(release_build.files_dir(settings), app)
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
        release_build.build_release_for(settings, manifest.name)
    elif not release_exists(settings, manifest.name, release):
        raise NotFound(
            f"{naming.env_id(record.app, record.env)} runs release {release} of "
            f"{manifest.name}, which is not on the master any more",
            f"deploy a release: salt-run gdl.deploy app={record.app} env={record.env}",
        )
    return record, release
