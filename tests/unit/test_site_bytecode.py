"""The requirements' bytecode, made once on the master, is current on a server of its Python."""

from __future__ import annotations

import compileall
import importlib.util
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from gdl import release_build, wheel_build
from gdl.wheel_build import Workspace


def installed_tree(tmp_path):
    home = tmp_path / "home"
    wheels = home / "wheels"
    (wheels / "tinylib").mkdir(parents=True)
    (wheels / "tinylib" / "__init__.py").write_text("ANSWER = 42\n")
    (wheels / "tinylib" / "more.py").write_text("def twice(x):\n    return 2 * x\n")
    return Workspace(home=home, wheels=wheels, user=None, env={})


def run(command, timeout, user, cwd, env):
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=cwd)


def test_the_bytecode_is_current_where_the_sources_keep_the_archives_time(tmp_path):
    space = installed_tree(tmp_path)
    wheel_build.compile_site_packages(space, sys.executable, run=run)
    cached = importlib.util.cache_from_source(str(space.wheels / "tinylib" / "more.py"))
    made = Path(cached).read_bytes()
    assert made[8:12] == b"\0\0\0\0"  # compiled against a source time of 0

    # As a server gets it: the release archive's members, extracted, copied into a venv.
    members = sorted(
        (f"site-packages/{path.relative_to(space.wheels).as_posix()}", path)
        for path in space.wheels.rglob("*")
        if path.is_file()
    )
    archive = tmp_path / "release.tar"
    with tarfile.open(archive, "w") as packed:
        for name, path in members:
            info = packed.gettarinfo(str(path), name)
            info.mtime = 0
            with open(path, "rb") as handle:
                packed.addfile(info, handle)
    server = tmp_path / "server"
    with tarfile.open(archive) as packed:
        packed.extractall(server)  # the archive made just above
    site = tmp_path / "venv-site"
    shutil.copytree(server / "site-packages", site)

    # The server's compileall (as the app role runs it) finds nothing to do...
    assert compileall.compile_dir(site, quiet=1, workers=1)
    server_cached = importlib.util.cache_from_source(str(site / "tinylib" / "more.py"))
    assert Path(server_cached).read_bytes() == made
    # ...and Python imports from it as current bytecode.
    sys.path.insert(0, str(site))
    try:
        spec = importlib.util.find_spec("tinylib.more")
        assert spec.loader.get_code("tinylib.more").co_filename == str(site / "tinylib" / "more.py")
    finally:
        sys.path.remove(str(site))
        sys.modules.pop("tinylib", None)


def test_a_source_that_does_not_compile_is_one_line(tmp_path):
    space = installed_tree(tmp_path)
    (space.wheels / "tinylib" / "broken.py").write_text("def (:\n")
    try:
        wheel_build.compile_site_packages(space, sys.executable, run=run)
    except release_build.GdlError as error:
        assert str(error).startswith("compiling the requirements failed (")
        assert "\n" not in str(error)
    else:
        raise AssertionError("a broken source compiled")
