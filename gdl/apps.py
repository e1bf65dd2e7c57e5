"""The app catalogue on the master: the apps under ``apps/`` and their manifests.

An app is a directory under ``apps/`` holding a manifest, ``app.yaml``::

    name: blog                    # the directory's name
    version: 1.0.0                # the release's name on the servers
    wsgi: blog:app                # gunicorn's entry, module:attribute
    requirements: requirements.txt  # must list gunicorn
    health: /healthz              # haproxy's check path, answers 200 when fit
    static: static                # optional: a directory nginx serves at /static/
    description: ...              # optional

Adding an app is adding such a directory: the states read the manifest.  A
checked manifest is what :mod:`gdl.release_build` builds a release archive
from; :mod:`gdl.releases` decides which release an environment runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gdl import naming
from gdl.errors import InvalidRequest

MANIFEST_NAME = "app.yaml"
# Every value is matched whole (re.fullmatch: a trailing newline does not pass)
# against characters that mean nothing to a shell, nginx, gunicorn, haproxy or
# YAML, so a manifest's value cannot add to a command or a configuration.
VERSION_PATTERN = re.compile(r"[0-9A-Za-z][0-9A-Za-z._+-]{0,31}")
WSGI_PATTERN = re.compile(
    r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*"
)
# A path inside the app's directory: no leading '/', no '.' or '..' part.
RELATIVE_PATH_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*")
HEALTH_PATTERN = re.compile(r"/[A-Za-z0-9_.~/-]*")
# Directories a release leaves out of the app (gdl.release_build), at any depth,
# and the one a server makes in it (the release's virtualenv): a static directory
# naming one would be missing from the release, or serve what gdl made.
LEFT_OUT_DIRS = frozenset({"__pycache__", ".pytest_cache", "wheelhouse", "site-packages"})
SERVER_MADE_DIRS = frozenset({"venv"})
MAX_LENGTH = {"wsgi": 128, "requirements": 128, "static": 128, "health": 128, "description": 200}
REQUIRED_KEYS = ("name", "version", "wsgi", "requirements", "health")
OPTIONAL_KEYS = ("static", "description")


@dataclass(frozen=True)
class AppManifest:
    """An app's validated manifest."""

    name: str
    version: str
    wsgi: str
    requirements: str
    health: str
    static: str | None
    description: str
    path: Path  # the app's directory

    @property
    def requirements_path(self) -> Path:
        return self.path / self.requirements

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "wsgi": self.wsgi,
            "requirements": self.requirements,
            "health": self.health,
            "static": self.static,
            "description": self.description,
        }


def list_apps(apps_dir: Path | str) -> list[str]:
    """The names of the apps under ``apps_dir``: directories holding a manifest."""
    root = Path(apps_dir)
    if not root.is_dir():
        return []
    return sorted(
        entry.name
        for entry in root.iterdir()
        if entry.is_dir() and (entry / MANIFEST_NAME).is_file()
    )


def load_manifest(apps_dir: Path | str, name: str) -> AppManifest:
    """Read and check app ``name``'s manifest; InvalidRequest says what to fix."""
    available = list_apps(apps_dir)
    if name not in available:
        choices = ", ".join(available) if available else "none: add one under apps/"
        raise InvalidRequest(f"app {name!r} does not exist", f"use one of {choices}")
    app_dir = Path(apps_dir) / name
    manifest_path = app_dir / MANIFEST_NAME
    where = f"apps/{name}/{MANIFEST_NAME}"
    try:
        data = yaml.safe_load(manifest_path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        problem = " ".join(str(exc).split())
        raise InvalidRequest(f"{where} cannot be read ({problem})", "fix its YAML") from exc
    if not isinstance(data, dict):
        raise InvalidRequest(f"{where} is not a mapping", "write key: value lines")
    return _check_manifest(data, app_dir, where)


def load_manifest_from(source: Path | str, name: str) -> AppManifest:
    """Read and check the manifest of app ``name`` in directory ``source``.

    ``source`` holds a release of the app outside ``apps/`` (a deploy's
    ``source=``): its directory may be named anything, its manifest must name
    the app.
    """
    app_dir = Path(source)
    manifest_path = app_dir / MANIFEST_NAME
    where = str(manifest_path)
    if not manifest_path.is_file():
        raise InvalidRequest(
            f"{app_dir} holds no {MANIFEST_NAME}", f"give the directory of a release of {name}"
        )
    try:
        data = yaml.safe_load(manifest_path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        problem = " ".join(str(exc).split())
        raise InvalidRequest(f"{where} cannot be read ({problem})", "fix its YAML") from exc
    if not isinstance(data, dict):
        raise InvalidRequest(f"{where} is not a mapping", "write key: value lines")
    return _check_manifest(data, app_dir, where, expected_name=name)


def _check_manifest(
    data: dict[str, Any], app_dir: Path, where: str, expected_name: str | None = None
) -> AppManifest:
    missing = [key for key in REQUIRED_KEYS if data.get(key) in (None, "")]
    if missing:
        raise InvalidRequest(f"{where} lacks {', '.join(missing)}", "add them (see docs/apps.md)")
    unknown = sorted(set(data) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
    if unknown:
        raise InvalidRequest(
            f"{where} has unknown key{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(str(key)[:40] for key in unknown)}",
            f"use only {', '.join(REQUIRED_KEYS + OPTIONAL_KEYS)}",
        )
    values = {key: _text(data, key, where) for key in REQUIRED_KEYS + OPTIONAL_KEYS}
    expected_name = expected_name or app_dir.name
    if values["name"] != expected_name:
        raise InvalidRequest(
            f"{where} names the app {values['name'][:40]!r}", f"set name: {expected_name}"
        )
    if not naming.APP_PATTERN.fullmatch(values["name"]):
        raise InvalidRequest(
            f"app name {values['name'][:40]!r} is not valid",
            "use lower-case letters, digits and '_', starting with a letter, at most 24",
        )
    if not VERSION_PATTERN.fullmatch(values["version"]):
        raise InvalidRequest(
            f"{where} has version {values['version'][:40]!r}",
            "use letters, digits, '.', '_', '+' and '-', at most 32, for example 1.2.0",
        )
    if not WSGI_PATTERN.fullmatch(values["wsgi"]):
        raise InvalidRequest(
            f"{where} has wsgi {values['wsgi'][:40]!r}",
            "write module:attribute, for example blog:app",
        )
    if not HEALTH_PATTERN.fullmatch(values["health"]):
        raise InvalidRequest(
            f"{where} has health {values['health'][:40]!r}",
            "give a path such as /healthz (letters, digits, '/', '.', '_', '~', '-')",
        )
    requirements = values["requirements"]
    if not RELATIVE_PATH_PATTERN.fullmatch(requirements) or not (
        _inside(app_dir / requirements, app_dir) and (app_dir / requirements).is_file()
    ):
        raise InvalidRequest(
            f"{where} names requirements {requirements[:40]!r}, not a file of the app",
            "give a file inside the app's directory (letters, digits, '/', '.', '_', '-')",
        )
    check_requirements(app_dir / requirements, f"{where.rsplit(MANIFEST_NAME, 1)[0]}{requirements}")
    static = values["static"] or None
    refused = _static_refused(static) if static else ""
    if refused:
        raise InvalidRequest(
            f"{where} names static {static[:40]!r}, {refused}",
            "give a directory of the app's own, such as static "
            "(letters, digits, '/', '.', '_', '-')",
        )
    if static is not None and not (
        _inside(app_dir / static, app_dir) and (app_dir / static).is_dir()
    ):
        raise InvalidRequest(
            f"{where} names static {static[:40]!r}, not a directory of the app",
            "give a directory inside the app's directory, or drop the key",
        )
    description = values["description"]
    if not description.isprintable():
        raise InvalidRequest(
            f"{where} has a description with line breaks or control characters",
            "write it on one line",
        )
    return AppManifest(
        name=values["name"],
        version=values["version"],
        wsgi=values["wsgi"],
        requirements=requirements,
        health=values["health"],
        static=static,
        description=description,
        path=app_dir,
    )


def release_values_are_safe(values: dict[str, Any]) -> bool:
    """Whether a built release's manifest values pass the checks (an older gdl's may not)."""
    static = values.get("static")
    checks = (
        (WSGI_PATTERN, values.get("wsgi")),
        (RELATIVE_PATH_PATTERN, values.get("requirements")),
        (HEALTH_PATTERN, values.get("health")),
    )
    return all(isinstance(v, str) and len(v) <= 128 and p.fullmatch(v) for p, v in checks) and (
        static in (None, "") or (isinstance(static, str) and not _static_refused(static))
    )


def _static_refused(static: str) -> str:
    """Why nginx's alias may not be given ``static`` (a path in the release), or ''."""
    if len(static) > MAX_LENGTH["static"] or not RELATIVE_PATH_PATTERN.fullmatch(static):
        return "not a plain path inside the app"
    parts = static.split("/")
    if parts[0] in SERVER_MADE_DIRS or LEFT_OUT_DIRS.intersection(parts):
        return "a directory gdl makes or leaves out"
    return ""


def _text(data: dict[str, Any], key: str, where: str) -> str:
    """The manifest's value of ``key`` as text: strings (and whole-number versions) only."""
    value = data.get(key)
    if value is None:
        return ""
    if (
        isinstance(value, bool)
        or not isinstance(value, (str, int))
        or (isinstance(value, int) and key != "version")
    ):
        raise InvalidRequest(
            f"{where} has {key} of type {type(value).__name__}",
            f'write {key} as text (quote it: {key}: "...")',
        )
    text = str(value)
    if len(text) > MAX_LENGTH.get(key, 64):
        raise InvalidRequest(
            f"{where} has a {key} of {len(text)} characters",
            f"keep it to {MAX_LENGTH.get(key, 64)}",
        )
    return text


def check_requirements(path: Path, where: str) -> None:
    """Refuse a requirements file that could steer pip, or that lacks gunicorn.

    Options (``--index-url``, ``-e``, ``-r``, ``--trusted-host``...) and direct
    references (``name @ https://...``, VCS and file URLs, paths) would make
    the master fetch or run code from wherever they say; a release names
    packages with versions, and the master's own pip configuration says where
    they come from.  ``--hash`` pins are kept.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"{where} cannot be read ({exc})", "give a UTF-8 text file") from exc
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        words = line.split()
        steering = (
            words[0].startswith("-")
            or any(w.startswith("-") and not w.startswith("--hash=") for w in words[1:])
            or "://" in line
            or "@" in line
            or line.startswith((".", "/", "~"))
        )
        if steering:
            raise InvalidRequest(
                f"{where} line {number} is an option or a URL ({line[:60]!r})",
                "list packages by name and version only: where they come from is the "
                "master's pip configuration",
            )
    if not re.search(r"^\s*gunicorn\b", text, re.MULTILINE):
        raise InvalidRequest(
            f"{where} does not list gunicorn", "add gunicorn: every app runs under it"
        )


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True
