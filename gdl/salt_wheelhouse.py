"""The servers' Salt, as wheels the master serves: built once per Salt version, Python and platform.

Cloud servers often have no internet, so first boot installs the minion from
the master (:mod:`gdl.package_source` serves the wheels,
:mod:`gdl.userdata` installs them).  The wheelhouse holds the master's own
Salt version and every dependency, for the **servers'** Python and platform
(``gdl:server_python``, ``gdl:server_arch``, ``gdl:server_glibc``; a master
on Python 3.12 builds for Debian 12's 3.11), plus pip's own wheel, which
first boot runs straight from the file (images without ``python3-venv`` make
their venv ``--without-pip``).

Binary wheels are downloaded for the target (``pip download --only-binary``
with its Python, ABI and platform tags); what exists only as a source
distribution (Salt itself, timelib) is built into a wheel by the same
unprivileged, time-limited build the app releases use
(:mod:`gdl.wheel_build`).  The result lives in
``<state_dir>/package-source/salt-<version>-cp<xy>-<arch>/`` and is rebuilt
only when that directory is missing.
"""

from __future__ import annotations

import contextlib
import fcntl
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import salt.version

from gdl import userdata
from gdl.config import Settings
from gdl.errors import GdlError, LockHeld
from gdl.lock import lock_within
from gdl.wheel_build import (
    PIP_OPTIONS,
    WHEEL_TIMEOUT,
    Runner,
    Workspace,
    last_line,
    run_bounded,
    run_pip,
    workspace,
)

PACKAGE_SOURCE_DIR = "package-source"  # under the state dir: what the package source serves
OLDEST_MANYLINUX = 17  # manylinux_2_17 (manylinux2014): the oldest glibc wheels are built for
# Rounds of "download, build what has no wheel": each round builds one source-only package.
MAX_SOURCE_BUILDS = 8
_NO_MATCH = re.compile(r"No matching distribution found for ([A-Za-z0-9_.\-\[\]<>=!~, ]+)")
# How long a process waits for another one's build of the same wheelhouse.  The
# holder runs pip for up to WHEEL_TIMEOUT per step, and a build takes up to
# MAX_SOURCE_BUILDS rounds of two steps (build one package from source, then
# download): waiting less could give up on a build that is slow but still going,
# waiting this long still ends if the holder is stuck outside pip.
WHEELHOUSE_LOCK_TIMEOUT = 2 * MAX_SOURCE_BUILDS * WHEEL_TIMEOUT + 60
# Asking an interpreter whether it has pip takes a second; one that hangs has none.
PROBE_TIMEOUT = 60


@dataclass(frozen=True)
class Target:
    """What the wheels are for: a Salt version on the servers' Python and platform."""

    salt_version: str
    python: str = "3.11"  # Debian 12's
    arch: str = "x86_64"
    glibc: str = "2.36"  # Debian 12's

    @classmethod
    def for_servers(cls, settings: Settings) -> Target:
        """The master's own Salt version for the servers the settings describe."""
        return cls(
            salt_version=salt.version.__version__,
            python=settings.server_python,
            arch=settings.server_arch,
            glibc=settings.server_glibc,
        )

    @property
    def interpreter(self) -> str:
        return "cp" + self.python.replace(".", "")

    @property
    def name(self) -> str:
        """The wheelhouse's directory name, also its path under the package source's URL."""
        return f"salt-{self.salt_version}-{self.interpreter}-{self.arch}"

    @property
    def requirement(self) -> str:
        return f"salt=={self.salt_version}"

    def platforms(self) -> list[str]:
        """Every manylinux tag a server with this glibc runs, newest first."""
        newest = int(self.glibc.split(".")[1])
        tags = [
            f"manylinux_2_{minor}_{self.arch}" for minor in range(newest, OLDEST_MANYLINUX - 1, -1)
        ]
        # pip expands the legacy alias to manylinux2010 and manylinux1; linux_<arch> is what a
        # wheel built here from source is tagged (the index itself holds none).
        return [*tags, f"manylinux2014_{self.arch}", f"linux_{self.arch}"]

    def runs(self, wheel_name: str) -> bool:
        """True when a wheel of this name installs on the servers."""
        tags = wheel_name[: -len(".whl")].split("-")[-3:]
        if tags[1:] == ["none", "any"]:
            return True
        return (
            tags[0] == self.interpreter
            and tags[1] in (self.interpreter, "abi3")
            and tags[2] in self.platforms()
        )

    def download_options(self) -> list[str]:
        options = [
            "--only-binary=:all:",
            "--python-version",
            self.python,
            "--implementation",
            "cp",
        ]
        for abi in (self.interpreter, "abi3", "none"):
            options += ["--abi", abi]
        for platform in self.platforms():
            options += ["--platform", platform]
        return options


def package_root(settings: Settings) -> Path:
    """The directory the package source serves: ``<state_dir>/package-source``."""
    return Path(settings.state_dir) / PACKAGE_SOURCE_DIR


def wheelhouse_path(root: Path | str, target: Target) -> Path:
    return Path(root) / target.name


@contextlib.contextmanager
def _exclusive(
    root: Path, target: Target, timeout: float = WHEELHOUSE_LOCK_TIMEOUT
) -> Iterator[None]:
    """One build of a wheelhouse at a time on this master (others wait, then find it).

    Raises LockHeld, one line naming the lock file, when another build holds it past
    ``timeout`` seconds.
    """
    root.mkdir(parents=True, exist_ok=True)
    path = root / f".{target.name}.lock"
    with open(path, "a") as handle:
        lock_within(
            handle,
            timeout,
            lambda: LockHeld(
                f"another process has been building the wheelhouse {target.name} for more "
                f"than {timeout:.0f} s (lock file {path})",
                f"stop it if it is stuck (fuser -v {path} names it), then run this again",
            ),
            record_lock=True,
        )
        try:
            yield
        finally:
            fcntl.lockf(handle, fcntl.LOCK_UN)


def ensure_salt_wheelhouse(
    root: Path | str,
    target: Target,
    python: str = sys.executable,
    run: Runner = run_bounded,
    lock_timeout: float = WHEELHOUSE_LOCK_TIMEOUT,
) -> Path:
    """The wheelhouse of ``target`` under ``root``, built when missing.

    Raises GdlError, one line, when a build fails or another process's build of it
    holds it past ``lock_timeout`` seconds; nothing is left half-made.
    """
    root = Path(root)
    path = wheelhouse_path(root, target)
    if path.is_dir():
        return path
    with _exclusive(root, target, lock_timeout):
        if path.is_dir():  # another process built it while this one waited
            return path
        with workspace(path, target.name) as space:
            _fill(space, target, python, run)
    return path


def _fill(space: Workspace, target: Target, python: str, run: Runner) -> None:
    hint = "check that the master reaches the package index (or its pip configuration's mirror)"
    built = space.home / "built"  # wheels made here from source distributions
    built.mkdir()
    space.give(built)
    sources = [target.requirement]
    builder = builder_python(target, python)
    for _round in range(MAX_SOURCE_BUILDS):
        for requirement in sources:
            _build_wheel(space, built, requirement, target, builder, run, hint)
        done = run_pip(
            space,
            python,
            [
                "download",
                *PIP_OPTIONS,
                *target.download_options(),
                "--find-links",
                str(built),
                "--dest",
                str(space.wheels),
                target.requirement,
                "pip",
            ],
            what=f"downloading Salt {target.salt_version}'s wheels",
            hint=hint,
            run=run,
            check=False,
        )
        if done.returncode == 0:
            break
        missing = _NO_MATCH.search(done.stderr or "")
        if missing is None:
            raise GdlError(
                f"downloading Salt {target.salt_version}'s wheels for {target.interpreter} "
                f"{target.arch} failed ({last_line(done)})",
                hint,
            )
        # A dependency with no wheel for the target: build it from source, then try again.
        sources = [missing.group(1).strip()]
    else:
        raise GdlError(
            f"Salt {target.salt_version} needs more than {MAX_SOURCE_BUILDS} packages "
            "built from source",
            hint,
        )
    if not any(wheel.name.startswith("pip-") for wheel in space.wheels.iterdir()):
        raise GdlError(f"pip's wheel did not reach the wheelhouse {target.name}", hint)


def builder_python(target: Target, master_python: str = sys.executable) -> str:
    """The interpreter that builds wheels from source: one of the servers' version if any.

    The master's own builds pure-Python wheels for any server; a package with C
    code needs the servers' Python version (``python3.11`` beside a master on 3.12).
    """
    if f"{sys.version_info.major}.{sys.version_info.minor}" == target.python:
        return master_python
    candidate = shutil.which(f"python{target.python}")
    if candidate is None:
        return master_python
    try:
        probe = subprocess.run(
            [candidate, "-m", "pip", "--version"],
            capture_output=True,
            check=False,
            timeout=PROBE_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        return master_python
    return candidate if probe.returncode == 0 else master_python


def _build_wheel(
    space: Workspace,
    built: Path,
    requirement: str,
    target: Target,
    python: str,
    run: Runner,
    hint: str,
) -> None:
    """Build ``requirement`` (no wheel for the servers) into a wheel the servers can run."""
    name = re.split(r"[<>=!~\[ ,]", requirement, maxsplit=1)[0]
    before = set(built.iterdir())
    run_pip(
        space,
        python,
        [
            "wheel",
            *PIP_OPTIONS,
            "--no-deps",
            f"--no-binary={name}",
            "--wheel-dir",
            str(built),
            requirement,
        ],
        what=f"building a wheel of {requirement} for the servers",
        hint=hint,
        run=run,
    )
    for wheel in set(built.iterdir()) - before:
        if not target.runs(wheel.name):
            wheel.unlink()
            raise GdlError(
                f"{requirement} has no wheel for the servers' {target.interpreter} "
                f"{target.arch} and its source builds {wheel.name} here",
                f"install python{target.python} with pip on the master, or give the servers "
                "a pip_index_url that has the wheel",
            )


def first_boot_source(
    settings: Settings,
    master_address: str,
    index_url: str | None = None,
    http_proxy: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> userdata.SaltSource:
    """Where servers install Salt from: this master's wheelhouse, built first when missing."""
    target = Target.for_servers(settings)
    root = package_root(settings)
    if not wheelhouse_path(root, target).is_dir() and progress is not None:
        progress(f"building {target.name} for the servers' first boot (once)")
    ensure_salt_wheelhouse(root, target)
    return userdata.master_source(
        master_address,
        settings.package_port,
        target.name,
        target.salt_version,
        index_url=index_url,
        http_proxy=http_proxy,
    )
