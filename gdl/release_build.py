"""Building release archives on the master: wheels, the reproducible tarball, where it lives.

App servers have no internet, so everything they install comes from one
**release archive** built here from an app's checked manifest
(:mod:`gdl.apps`): the app's files, ``site-packages/`` with every requirement
installed from wheels built here (``pip wheel``, then ``pip install --target``),
and ``RELEASE.json``.  The archive is
written to ``<state_dir>/files/gdl-releases/<app>/`` (that ``files``
directory is a ``file_roots`` entry of the master), so minions fetch
``salt://gdl-releases/<app>/<app>-<version>.tar.gz`` and check it against the
``.sha256`` file beside it; the release's manifest is written beside it too
(``<app>-<version>.yaml``), so the states run a release by its own manifest
even when it was built from a directory other than ``apps/<app>`` (a deploy's
``source=``).  Building is idempotent: wheels are rebuilt only when the
requirements file changes, and the archive is byte-for-byte the same for the
same inputs, so re-running changes nothing on the servers.

This module makes and finds archives; :mod:`gdl.releases` decides which
release an environment needs (a build's, a deploy's, a rollback's) and calls
it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from gdl.apps import LEFT_OUT_DIRS, AppManifest, load_manifest, load_manifest_from
from gdl.errors import GdlError
from gdl.wheel_build import (
    Runner,
    build_site_packages,
    build_wheelhouse,
    requirements_sha256,
    run_bounded,
)

__all__ = [
    "Release",
    "build_release",
    "build_release_for",
    "build_release_from",
    "build_release_of",
    "build_site_packages",
    "build_wheelhouse",
    "files_dir",
    "list_releases",
    "release_bytes",
    "release_manifest_path",
    "release_path",
    "release_url",
    "requirements_sha256",
    "wheel_cache_dir",
]

if TYPE_CHECKING:
    from gdl.config import Settings

RELEASES_DIR = "gdl-releases"  # under the fileserver's files directory
# Left out of a release: build and editor leftovers that differ between checkouts.
SKIPPED_NAMES = {*LEFT_OUT_DIRS, "RELEASE.json"}
SKIPPED_SUFFIXES = (".pyc", ".pyo", ".swp", "~")


@dataclass(frozen=True)
class Release:
    """A release archive on the master's fileserver."""

    app: str
    version: str
    archive: Path
    sha256: str
    requirements_sha256: str
    changed: bool  # False when an identical archive was already there

    @property
    def url(self) -> str:
        return release_url(self.app, self.version)


def release_url(app: str, version: str) -> str:
    """The fileserver URL minions fetch a release from."""
    return f"salt://{RELEASES_DIR}/{app}/{app}-{version}.tar.gz"


def release_path(files_dir: Path | str, app: str, version: str) -> Path:
    """Where a release archive lives on the master."""
    return Path(files_dir) / RELEASES_DIR / app / f"{app}-{version}.tar.gz"


def release_manifest_path(files_dir: Path | str, app: str, version: str) -> Path:
    """The release's manifest beside its archive (the states read it)."""
    return Path(files_dir) / RELEASES_DIR / app / f"{app}-{version}.yaml"


def app_members(manifest: AppManifest) -> list[tuple[str, Path]]:
    """The app's files (name in the archive, file on disk), sorted; links that leave it refused.

    A link is packed as the file it points to, so one pointing outside the
    app's directory (``/etc/salt/pki/master/master.pem``) would ship that file
    to every app server: it is refused, as is a link to nothing and a file
    with other hard links (which may be any file of the master's).
    """
    root = manifest.path.resolve()
    members: list[tuple[str, Path]] = []
    for top, dirs, files in os.walk(manifest.path):
        kept_dirs = sorted(d for d in dirs if d not in SKIPPED_NAMES and not d.startswith("."))
        for name in kept_dirs:
            _check_link(manifest, root, Path(top) / name)
        dirs[:] = kept_dirs
        for file_name in files:
            if file_name in SKIPPED_NAMES or file_name.startswith("."):
                continue
            if file_name.endswith(SKIPPED_SUFFIXES):
                continue
            path = Path(top) / file_name
            _check_link(manifest, root, path)
            members.append((path.relative_to(manifest.path).as_posix(), path))
    return sorted(members)


def _check_link(manifest: AppManifest, root: Path, path: Path) -> None:
    shown = path.relative_to(manifest.path).as_posix()
    refused = ""
    if path.is_symlink():
        target = path.resolve()
        if not target.exists():
            refused = "is a link to nothing"
        elif target != root and root not in target.parents:
            refused = f"is a link to {target}, outside the app"
    elif path.is_file() and path.stat().st_nlink > 1:
        refused = "has other hard links (they may be any file of the master's)"
    if refused:
        raise GdlError(
            f"{shown[:80]} in release {manifest.version} of {manifest.name} {refused}",
            "put the file itself in the app's directory, or remove it",
        )


def _release_members(
    manifest: AppManifest, site_packages: Path, members: list[tuple[str, Path]] | None = None
) -> list[tuple[str, Path]]:
    """(name in the archive, file on disk), sorted, for a reproducible archive."""
    found = list(app_members(manifest) if members is None else members)
    for top, dirs, files in os.walk(site_packages):
        here = Path(top)
        dirs[:] = [d for d in dirs if not (here == site_packages and d == "bin")]
        # The bytecode the master compiled is kept (gdl.wheel_build.compile_site_packages).
        found.extend(
            (f"site-packages/{(here / name).relative_to(site_packages).as_posix()}", here / name)
            for name in files
        )
    return sorted(found)


def content_sha256(manifest: AppManifest, members: list[tuple[str, Path]]) -> str:
    """What makes a release what it is: its manifest, its files and their modes, its requirements.

    Wheels are left out: built again from the same requirements they may
    differ in bytes, not in what the release is.
    """
    digest = hashlib.sha256()
    digest.update(json.dumps(manifest.as_dict(), sort_keys=True).encode())
    for name, path in members:
        data = path.read_bytes()
        executable = os.access(path, os.X_OK)
        digest.update(f"\0{name}\0{int(executable)}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def _add_file(archive: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = 0  # the same inputs make the same bytes
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    archive.addfile(info, io.BytesIO(data))


def _add_dir(archive: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    archive.addfile(info)


def release_bytes(
    manifest: AppManifest, site_packages: Path, members: list[tuple[str, Path]] | None = None
) -> bytes:
    """The release archive (tar.gz, no top-level directory), reproducibly."""
    members = _release_members(manifest, site_packages, members)
    info = {
        "app": manifest.name,
        "version": manifest.version,
        "requirements_sha256": requirements_sha256(manifest),
        "manifest": manifest.as_dict(),
    }
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as archive:
        seen_dirs: set[str] = set()
        for name, path in members:
            parts = name.split("/")[:-1]
            for depth in range(1, len(parts) + 1):
                directory = "/".join(parts[:depth])
                if directory not in seen_dirs:
                    seen_dirs.add(directory)
                    _add_dir(archive, directory)
            mode = 0o755 if os.access(path, os.X_OK) else 0o644
            _add_file(archive, name, path.read_bytes(), mode)
        _add_file(
            archive,
            "RELEASE.json",
            (json.dumps(info, indent=2, sort_keys=True) + "\n").encode(),
            0o644,
        )
    packed = io.BytesIO()
    with gzip.GzipFile(fileobj=packed, mode="wb", mtime=0) as compressed:
        compressed.write(raw.getvalue())
    return packed.getvalue()


def build_release(
    apps_dir: Path | str,
    name: str,
    files_dir: Path | str,
    cache_dir: Path | str,
    python: str = sys.executable,
    run: Runner = run_bounded,
) -> Release:
    """Build (or find) the release archive of app ``name`` at its manifest's version.

    ``files_dir`` is the master's ``file_roots`` entry for generated files
    (``<state_dir>/files``); ``cache_dir`` keeps wheels between builds
    (``<state_dir>/wheelhouse``).  Writing is atomic, and an archive whose
    bytes are unchanged is left alone (``changed`` False).
    """
    return build_release_of(
        load_manifest(apps_dir, name), files_dir, cache_dir, python=python, run=run
    )


def build_release_of(
    manifest: AppManifest,
    files_dir: Path | str,
    cache_dir: Path | str,
    python: str = sys.executable,
    run: Runner = run_bounded,
) -> Release:
    """Build (or find) the release archive of an already checked manifest.

    A release is immutable: once built, its version names that content for
    good (an app server that unpacked it never looks again).  Building it
    again with the same content changes nothing; with other content it is
    refused before anything is built.
    """
    members = app_members(manifest)
    content = content_sha256(manifest, members)
    archive = release_path(files_dir, manifest.name, manifest.version)
    hash_file = archive.with_name(archive.name + ".sha256")
    content_file = archive.with_name(archive.name + ".content")
    built = archive.is_file() and hash_file.is_file()
    recorded = _first_word(content_file) if built else None
    if recorded is not None and recorded != content:
        raise _changed_release(manifest)
    if recorded is None:
        wheelhouse = build_wheelhouse(manifest, cache_dir, python=python, run=run)
        site_packages = build_site_packages(manifest, wheelhouse, python=python, run=run)
        data = release_bytes(manifest, site_packages, members)
        digest = hashlib.sha256(data).hexdigest()
        if built and _first_word(hash_file) != digest:
            # Built before releases recorded their content: its bytes are the check.
            raise _changed_release(manifest)
        if not built:
            archive.parent.mkdir(parents=True, exist_ok=True)
            _write_atomic(archive, data)
            # The format archive.extracted's source_hash reads: "<hex>  <file name>".
            _write_atomic(hash_file, f"{digest}  {archive.name}\n".encode())
        _write_atomic(content_file, f"{content}\n".encode())
    manifest_file = release_manifest_path(files_dir, manifest.name, manifest.version)
    manifest_text = yaml.safe_dump(manifest.as_dict(), default_flow_style=False, sort_keys=True)
    if not manifest_file.is_file() or manifest_file.read_text(encoding="utf-8") != manifest_text:
        manifest_file.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(manifest_file, manifest_text.encode())
    return Release(
        app=manifest.name,
        version=manifest.version,
        archive=archive,
        sha256=_first_word(hash_file) or "",
        requirements_sha256=requirements_sha256(manifest),
        changed=not built,
    )


def _first_word(path: Path) -> str | None:
    try:
        words = path.read_text(encoding="utf-8").split()
    except OSError:
        return None
    return words[0] if words else None


def _changed_release(manifest: AppManifest) -> GdlError:
    return GdlError(
        f"release {manifest.version} of {manifest.name} is already built, with other content: "
        "a release never changes under its version",
        f"give this one a new version in its app.yaml (version: {manifest.version} is taken)",
    )


def list_releases(files_dir: Path | str, app: str) -> list[str]:
    """The versions of ``app`` already built on this master, sorted by name."""
    directory = Path(files_dir) / RELEASES_DIR / app
    prefix, suffix = f"{app}-", ".tar.gz"
    if not directory.is_dir():
        return []
    return sorted(
        entry.name[len(prefix) : -len(suffix)]
        for entry in directory.iterdir()
        if entry.name.startswith(prefix) and entry.name.endswith(suffix)
    )


def _write_atomic(path: Path, data: bytes) -> None:
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.chmod(temp_name, 0o644)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def files_dir(settings: Settings) -> Path:
    """The master's ``file_roots`` entry for generated files: ``<state_dir>/files``."""
    return Path(settings.state_dir) / "files"


def wheel_cache_dir(settings: Settings) -> Path:
    """Where wheels are kept between builds: ``<state_dir>/wheelhouse`` (not served)."""
    return Path(settings.state_dir) / "wheelhouse"


def build_release_for(settings: Settings, name: str, python: str = sys.executable) -> Release:
    """:func:`build_release` with the directories of the master's settings."""
    return build_release(
        settings.apps_dir, name, files_dir(settings), wheel_cache_dir(settings), python=python
    )


def build_release_from(
    settings: Settings, name: str, source: Path | str, python: str = sys.executable
) -> Release:
    """Build the release of app ``name`` held in directory ``source`` (its own app.yaml)."""
    manifest = load_manifest_from(source, name)
    return build_release_of(manifest, files_dir(settings), wheel_cache_dir(settings), python=python)
