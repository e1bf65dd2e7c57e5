"""The release's wheelhouse: ``pip wheel`` of an app's requirements, without root's powers.

Building a wheel from a source distribution runs the package's own code, so
the master never runs it as root: when gdl runs as root, ``pip wheel`` runs as
an unprivileged user (``nobody``) in a directory of its own, with a clean
environment and a time limit; the wheels are then moved into the master's
cache by root.  The requirements file was checked before (:func:`gdl.apps.check_requirements`:
no pip options, no URLs), so the master's own pip configuration, and nothing in
the release, says where packages come from.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gdl.errors import GdlError

if TYPE_CHECKING:
    from gdl.apps import AppManifest

BUILD_USER = "nobody"
WHEEL_TIMEOUT = 600.0  # seconds for one app's `pip wheel`
# The invoking user's pip configuration files: the build user cannot read them
# (root's home is private), so their content is handed over in a copy.
USER_PIP_CONFIGS = ("~/.config/pip/pip.conf", "~/.pip/pip.conf")

Runner = Callable[..., subprocess.CompletedProcess]
# Every pip run of a build: no prompt, no cache, no chatter.
PIP_OPTIONS = ["--disable-pip-version-check", "--no-input", "--quiet", "--no-cache-dir"]
# Run by the build user's Python on the installed tree (argv[1]): every file's
# time set to 0, then each source compiled for that Python.
COMPILE_AT_TIME_ZERO = (
    "import compileall, os, sys; root = sys.argv[1]; "
    "[os.utime(os.path.join(top, name), (0, 0)) for top, _, names in os.walk(root) "
    "for name in names]; "
    "sys.exit(not compileall.compile_dir(root, quiet=1, workers=1))"
)


def requirements_sha256(manifest: AppManifest) -> str:
    return hashlib.sha256(manifest.requirements_path.read_bytes()).hexdigest()


def run_bounded(
    command: list[str],
    *,
    timeout: float,
    user: str | None = None,
    cwd: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """Run ``command`` (as ``user``), killing its whole process group at ``timeout``.

    Raises subprocess.TimeoutExpired once the group is killed: a build that
    hangs (an sdist's setup waiting on the network) never outlives the lock.
    """
    identity: dict[str, Any] = {}
    if user is not None:
        entry = pwd.getpwnam(user)
        identity = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
    with subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        umask=0o022,
        **identity,
    ) as process:
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise
        return subprocess.CompletedProcess(command, process.returncode, out, err)


def _build_environment(home: Path) -> dict[str, str]:
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "TMPDIR": str(home),
        "PIP_NO_INPUT": "1",
    }
    # The master's pip settings (an index mirror, find-links, certificates).
    env.update({k: v for k, v in os.environ.items() if k.startswith("PIP_")})
    for candidate in USER_PIP_CONFIGS:
        path = Path(candidate).expanduser()
        if "PIP_CONFIG_FILE" not in env and path.is_file():
            copy = home / "pip.conf"
            copy.write_text(path.read_text())
            env["PIP_CONFIG_FILE"] = str(copy)
    return env


@dataclass
class Workspace:
    """Where one unprivileged build works: its home, its wheel directory, who runs it, how."""

    home: Path
    wheels: Path
    user: str | None
    env: dict[str, str]

    def give(self, *paths: Path) -> None:
        """Hand ``paths`` (made by root) to the build user."""
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            for path in paths:
                os.chown(path, entry.pw_uid, entry.pw_gid)


def build_user() -> str | None:
    """Who runs builds: ``nobody`` when gdl runs as root, else gdl's own user (None)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(BUILD_USER)
    except KeyError:
        raise GdlError(
            f"there is no user {BUILD_USER!r} to build wheels as, and gdl never builds "
            "them as root",
            f"add the user (useradd --system {BUILD_USER})",
        ) from None
    return BUILD_USER


def _copy_wheels(made: Path, scratch: Path) -> None:
    for wheel in sorted(made.iterdir()):
        if wheel.is_file() and not wheel.is_symlink():
            shutil.copyfile(wheel, scratch / wheel.name)


def _copy_tree(made: Path, scratch: Path) -> None:
    """Directories and regular files only: a link the build user left is not followed."""
    for top, dirs, files in os.walk(made):
        relative = Path(top).relative_to(made)
        dirs[:] = [d for d in dirs if not (Path(top) / d).is_symlink()]
        for name in dirs:
            (scratch / relative / name).mkdir(mode=0o755)
        for name in files:
            source = Path(top) / name
            if source.is_file() and not source.is_symlink():
                shutil.copyfile(source, scratch / relative / name)
                (scratch / relative / name).chmod(0o755 if os.access(source, os.X_OK) else 0o644)


@contextlib.contextmanager
def workspace(target: Path, prefix: str, tree: bool = False) -> Iterator[Workspace]:
    """A build user's workspace whose wheels become ``target`` when the block succeeds.

    The wheels (with ``tree``, the whole directory made) are copied into
    ``target`` (in the master's private state dir) by root, all at once: a
    directory ``target`` that exists is complete.
    """
    user = build_user()
    target.parent.mkdir(parents=True, exist_ok=True)
    # The build user's own directory, outside the master's private state dir.
    home = Path(tempfile.mkdtemp(prefix=f"gdl-wheels-{prefix}-"))
    scratch = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
    try:
        wheels = home / "wheels"
        wheels.mkdir()
        space = Workspace(home=home, wheels=wheels, user=user, env=_build_environment(home))
        space.give(home, wheels, *home.glob("pip.conf"))
        yield space
        (_copy_tree if tree else _copy_wheels)(wheels, scratch)
        scratch.chmod(0o755)
        os.replace(scratch, target)
    finally:
        shutil.rmtree(home, ignore_errors=True)
        if scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)


def run_pip(
    space: Workspace,
    python: str,
    arguments: list[str],
    *,
    what: str,
    hint: str,
    run: Runner = run_bounded,
    timeout: float = WHEEL_TIMEOUT,
    check: bool = True,
) -> subprocess.CompletedProcess:
    """``python -m pip ARGUMENTS`` as the build user; a failure is one line naming ``what``.

    With ``check`` False a pip that ran and failed is returned, for the caller to read.
    """
    return run_as_builder(
        space,
        [python, "-m", "pip", *arguments],
        what=what,
        hint=hint,
        run=run,
        timeout=timeout,
        check=check,
    )


def run_as_builder(
    space: Workspace,
    command: list[str],
    *,
    what: str,
    hint: str,
    run: Runner = run_bounded,
    timeout: float = WHEEL_TIMEOUT,
    check: bool = True,
) -> subprocess.CompletedProcess:
    """``command`` (a Python's) as the build user; a failure is one line naming ``what``."""
    python = command[0]
    try:
        done = run(command, timeout=timeout, user=space.user, cwd=str(space.home), env=space.env)
    except OSError as error:
        raise GdlError(
            f"cannot run {python} to build wheels as user {space.user or 'gdl runs as'} "
            f"({error.strerror})",
            "install gdl with a Python that user can run (not under root's home)",
        ) from None
    except subprocess.TimeoutExpired:
        raise GdlError(f"{what} took longer than {timeout:.0f} s", hint) from None
    if check and done.returncode != 0:
        raise GdlError(f"{what} failed ({last_line(done)})", hint)
    return done


def last_line(done: subprocess.CompletedProcess) -> str:
    """The last line pip printed: what went wrong, in its own words."""
    lines = [line for line in (done.stderr or done.stdout or "").splitlines() if line.strip()]
    return lines[-1].strip() if lines else f"exit status {done.returncode}"


def build_wheelhouse(
    manifest: AppManifest,
    cache_dir: Path | str,
    python: str = sys.executable,
    run: Runner = run_bounded,
    timeout: float = WHEEL_TIMEOUT,
) -> Path:
    """Wheels for every requirement of the app, built once per requirements file.

    The wheels land in ``<cache_dir>/<app>/<requirements sha256>/``; a
    directory that exists is complete (it is renamed into place only after
    ``pip wheel`` succeeded), so an unchanged requirements file costs nothing.
    Wheels are built by ``python``: give an interpreter of the servers'
    Python minor version when it differs from the master's.
    """
    target = Path(cache_dir) / manifest.name / requirements_sha256(manifest)
    if target.is_dir():
        return target
    with workspace(target, manifest.name) as space:
        requirements = space.home / "requirements.txt"
        shutil.copyfile(manifest.requirements_path, requirements)
        space.give(requirements)
        run_pip(
            space,
            python,
            [
                "wheel",
                *PIP_OPTIONS,
                "--requirement",
                str(requirements),
                "--wheel-dir",
                str(space.wheels),
            ],
            what=f"building wheels for app {manifest.name!r}",
            hint=f"check apps/{manifest.name}/{manifest.requirements} and that the master "
            "reaches the package index",
            run=run,
            timeout=timeout,
        )
    return target


def build_site_packages(
    manifest: AppManifest,
    wheelhouse: Path,
    python: str = sys.executable,
    run: Runner = run_bounded,
    timeout: float = WHEEL_TIMEOUT,
) -> Path:
    """The app's requirements installed from its wheelhouse: what a server's virtualenv gets.

    Made once per wheelhouse, beside it (``<wheelhouse>.site/``), by ``pip install
    --target`` from the wheels alone (installing a wheel runs none of its code).
    An app server then copies this tree into a virtualenv and compiles it with
    its own Python, which takes a second where ``pip install`` took several.
    With bytecode for ``python`` (:func:`compile_site_packages`), which a server
    of that Python version uses as it is.  Its ``bin/`` scripts name
    the master's interpreter, so releases leave them out (the app role writes
    the one it runs).
    """
    target = wheelhouse.with_name(wheelhouse.name + ".site")
    if target.is_dir():
        return target
    with workspace(target, manifest.name, tree=True) as space:
        # The wheelhouse lies in the master's private state dir: the build user reads a copy.
        wheels = space.home / "wheelhouse"
        requirements = space.home / "requirements.txt"
        shutil.copytree(wheelhouse, wheels)
        shutil.copyfile(manifest.requirements_path, requirements)
        space.give(wheels, *wheels.iterdir(), requirements)
        run_pip(
            space,
            python,
            [
                "install",
                *PIP_OPTIONS,
                "--no-index",
                "--no-compile",
                "--find-links",
                str(wheels),
                "--requirement",
                str(requirements),
                "--target",
                str(space.wheels),
            ],
            what=f"installing the wheels of app {manifest.name!r}",
            hint=f"check apps/{manifest.name}/{manifest.requirements}: every requirement "
            "needs a wheel in its wheelhouse",
            run=run,
            timeout=timeout,
        )
        compile_site_packages(space, python, run=run, timeout=timeout)
    return target


def compile_site_packages(
    space: Workspace, python: str, run: Runner = run_bounded, timeout: float = WHEEL_TIMEOUT
) -> None:
    """Bytecode of the installed requirements for ``python``, made once here for every server.

    Each source's time is set to 0 first, as the release archive stores it: a
    server of the same Python version then finds the bytecode current and
    compiles nothing, one of another version compiles its own beside it.
    Compiling runs none of the requirements' code.
    """
    run_as_builder(
        space,
        [python, "-c", COMPILE_AT_TIME_ZERO, str(space.wheels)],
        what="compiling the requirements",
        hint="check that every requirement's sources are Python this interpreter reads",
        run=run,
        timeout=timeout,
    )
