"""App manifests (gdl.apps) and release archives (gdl.release_build), without a package index."""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

import pytest

from gdl import apps, release_build, wheel_build
from gdl.errors import GdlError, InvalidRequest

REPO_APPS = Path(__file__).resolve().parents[2] / "apps"


def make_app(root: Path, name: str = "shop", **overrides: object) -> Path:
    app_dir = root / name
    (app_dir / "static").mkdir(parents=True)
    (app_dir / "requirements.txt").write_text("gunicorn==27.0.1\n")
    (app_dir / f"{name}.py").write_text("def app(environ, start_response):\n    return []\n")
    manifest = {
        "name": name,
        "version": "1.0.0",
        "wsgi": f"{name}:app",
        "requirements": "requirements.txt",
        "health": "/healthz",
        "static": "static",
    }
    manifest.update(overrides)
    lines = [f"{key}: {value}" for key, value in manifest.items() if value is not None]
    (app_dir / "app.yaml").write_text("\n".join(lines) + "\n")
    return app_dir


def fake_pip(wheels: dict[str, bytes]):
    """A stand-in for `pip wheel` that writes the given files into --wheel-dir, and for
    `pip install --target` that installs each as a package with a script and bytecode."""
    calls: list[list[str]] = []

    def run(command, **_kwargs):
        calls.append(command)
        if command[1] == "-c":  # compiling the installed tree: its bytecode is there already
            return subprocess.CompletedProcess(command, 0, "", "")
        if "--target" in command:
            target = Path(command[command.index("--target") + 1])
            for name, data in wheels.items():
                package = name.split("-")[0]
                (target / package / "__pycache__").mkdir(parents=True)
                (target / package / "__init__.py").write_bytes(data)
                (target / package / "__pycache__" / "__init__.pyc").write_bytes(b"code")
                (target / "bin").mkdir(exist_ok=True)
                (target / "bin" / package).write_text("#!/usr/bin/python3\n")
            return subprocess.CompletedProcess(command, 0, "", "")
        target = Path(command[command.index("--wheel-dir") + 1])
        for name, data in wheels.items():
            (target / name).write_bytes(data)
        return subprocess.CompletedProcess(command, 0, "", "")

    run.calls = calls
    return run


def test_repo_apps_are_listed_and_valid():
    assert apps.list_apps(REPO_APPS) == ["blog", "hello_world"]
    blog = apps.load_manifest(REPO_APPS, "blog")
    assert (blog.wsgi, blog.health, blog.static) == ("blog:app", "/healthz", "static")
    hello = apps.load_manifest(REPO_APPS, "hello_world")
    assert hello.static is None and hello.wsgi == "hello_world:app"


def test_unknown_app_names_the_choices():
    with pytest.raises(InvalidRequest) as caught:
        apps.load_manifest(REPO_APPS, "shop")
    assert str(caught.value) == "app 'shop' does not exist: use one of blog, hello_world"


def test_no_apps_at_all(tmp_path):
    assert apps.list_apps(tmp_path / "missing") == []
    with pytest.raises(InvalidRequest, match="none: add one under apps/"):
        apps.load_manifest(tmp_path, "shop")


def test_directories_without_manifest_are_not_apps(tmp_path):
    make_app(tmp_path)
    (tmp_path / "notes").mkdir()
    assert apps.list_apps(tmp_path) == ["shop"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"health": None}, "lacks health"),
        ({"version": "1.0 beta"}, "has version"),
        ({"wsgi": "shop"}, "write module:attribute"),
        ({"wsgi": "shop:app()"}, "write module:attribute"),
        ({"health": "healthz"}, "give a path such as /healthz"),
        ({"requirements": "../etc/passwd"}, "not a file of the app"),
        ({"requirements": "missing.txt"}, "not a file of the app"),
        ({"static": "assets"}, "not a directory of the app"),
        ({"colour": "blue"}, "unknown key colour"),
    ],
)
def test_bad_manifests_are_refused_with_a_fix(tmp_path, overrides, message):
    make_app(tmp_path, **overrides)
    with pytest.raises(InvalidRequest, match=message) as caught:
        apps.load_manifest(tmp_path, "shop")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        # A trailing newline, or anything a shell, nginx, gunicorn or haproxy reads.
        ({"version": '"1.0.0\\n"'}, "has version"),
        ({"version": '"1.0.0;id"'}, "has version"),
        ({"version": "1.10"}, "has version of type float"),
        ({"wsgi": '"shop:app\\n"'}, "write module:attribute"),
        ({"wsgi": '"shop:app --reload"'}, "write module:attribute"),
        ({"requirements": '"requirements.txt; touch /tmp/owned"'}, "not a file of the app"),
        ({"requirements": '"requirements.txt\\n"'}, "not a file of the app"),
        ({"requirements": "/etc/hostname"}, "not a file of the app"),
        ({"static": '"static;} server { listen 81"'}, "not a plain path inside the app"),
        ({"static": '"static/\\n"'}, "not a plain path inside the app"),
        ({"static": "static/../static"}, "not a plain path inside the app"),
        ({"health": '"/healthz ver HTTP/1.0"'}, "give a path such as /healthz"),
        ({"health": '"/healthz\\n"'}, "give a path such as /healthz"),
        ({"health": '"/h;x"'}, "give a path such as /healthz"),
        ({"health": "/" + "h" * 200}, "a health of 201 characters"),
        ({"description": '"one\\ntwo"'}, "write it on one line"),
        ({"wsgi": "[shop, app]"}, "has wsgi of type list"),
        ({"static": "{a: b}"}, "has static of type dict"),
    ],
)
def test_manifest_values_that_could_reach_a_command_or_config_are_refused(
    tmp_path, overrides, message
):
    make_app(tmp_path, **overrides)
    with pytest.raises(InvalidRequest, match=message) as caught:
        apps.load_manifest(tmp_path, "shop")
    assert "\n" not in str(caught.value)
    # A build is refused the same way before it builds or stores anything.
    files, cache = tmp_path / "files", tmp_path / "wheelhouse"

    def never_run(command, **_kwargs):
        raise AssertionError(f"pip ran for a refused manifest: {command}")

    with pytest.raises(InvalidRequest, match=message):
        release_build.build_release(tmp_path, "shop", files, cache, run=never_run)
    assert not files.exists() and not cache.exists()


@pytest.mark.parametrize(
    "line",
    [
        "--index-url https://pypi.example/simple",
        "--extra-index-url=https://pypi.example/simple",
        "-i https://pypi.example/simple",
        "--trusted-host pypi.example",
        "-e .",
        "-r other.txt",
        "./local-package",
        "shop @ https://example.org/shop.tar.gz",
        "git+https://example.org/shop.git",
        "flask==3.1.3 --global-option=--evil",
    ],
)
def test_requirements_that_steer_pip_are_refused(tmp_path, line):
    app_dir = make_app(tmp_path)
    (app_dir / "requirements.txt").write_text(f"gunicorn==27.0.1\n{line}\n")
    with pytest.raises(InvalidRequest, match="line 2 is an option or a URL") as caught:
        apps.load_manifest(tmp_path, "shop")
    assert "\n" not in str(caught.value)


def test_requirements_with_hashes_comments_and_markers_are_fine(tmp_path):
    app_dir = make_app(tmp_path)
    (app_dir / "requirements.txt").write_text(
        "# pinned\ngunicorn==27.0.1 --hash=sha256:" + "a" * 64 + "\n"
        'flask[async]>=3; python_version >= "3.11"  # web\n'
    )
    assert apps.load_manifest(tmp_path, "shop").requirements == "requirements.txt"


def test_manifest_name_must_be_the_directory(tmp_path):
    app_dir = make_app(tmp_path)
    manifest = app_dir / "app.yaml"
    manifest.write_text(manifest.read_text().replace("name: shop", "name: other"))
    with pytest.raises(InvalidRequest, match="set name: shop"):
        apps.load_manifest(tmp_path, "shop")


def test_requirements_must_bring_gunicorn(tmp_path):
    app_dir = make_app(tmp_path)
    (app_dir / "requirements.txt").write_text("flask\n")
    with pytest.raises(InvalidRequest, match="does not list gunicorn"):
        apps.load_manifest(tmp_path, "shop")


def test_manifest_that_is_not_yaml(tmp_path):
    app_dir = make_app(tmp_path)
    (app_dir / "app.yaml").write_text("name: [unclosed\n")
    with pytest.raises(InvalidRequest, match="cannot be read"):
        apps.load_manifest(tmp_path, "shop")


def test_static_is_optional(tmp_path):
    make_app(tmp_path, static=None)
    assert apps.load_manifest(tmp_path, "shop").static is None


def test_wheelhouse_is_built_once_per_requirements_file(tmp_path):
    make_app(tmp_path / "apps")
    manifest = apps.load_manifest(tmp_path / "apps", "shop")
    run = fake_pip({"gunicorn-27.0.1-py3-none-any.whl": b"wheel"})
    first = release_build.build_wheelhouse(manifest, tmp_path / "cache", run=run)
    second = release_build.build_wheelhouse(manifest, tmp_path / "cache", run=run)
    assert first == second
    assert len(run.calls) == 1
    assert run.calls[0][1:4] == ["-m", "pip", "wheel"]
    assert first.name == hashlib.sha256(b"gunicorn==27.0.1\n").hexdigest()
    # New requirements, new wheels.
    manifest.requirements_path.write_text("gunicorn==27.0.1\nflask\n")
    release_build.build_wheelhouse(manifest, tmp_path / "cache", run=run)
    assert len(run.calls) == 2


def test_failed_wheel_build_leaves_nothing_behind(tmp_path):
    make_app(tmp_path / "apps")
    manifest = apps.load_manifest(tmp_path / "apps", "shop")

    def failing(command, **_kwargs):
        return subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution\n")

    with pytest.raises(GdlError, match="No matching distribution") as caught:
        release_build.build_wheelhouse(manifest, tmp_path / "cache", run=failing)
    assert "apps/shop/requirements.txt" in str(caught.value)
    assert list((tmp_path / "cache" / "shop").iterdir()) == []


def test_release_is_reproducible_and_idempotent(tmp_path):
    app_dir = make_app(tmp_path / "apps")
    (app_dir / "static" / "style.css").write_text("body {}\n")
    (app_dir / "__pycache__").mkdir()
    (app_dir / "__pycache__" / "shop.cpython-311.pyc").write_bytes(b"junk")
    run = fake_pip({"gunicorn-27.0.1-py3-none-any.whl": b"wheel"})
    files = tmp_path / "files"
    first = release_build.build_release(
        tmp_path / "apps", "shop", files, tmp_path / "cache", run=run
    )
    assert first.changed
    assert first.archive == files / "gdl-releases" / "shop" / "shop-1.0.0.tar.gz"
    assert first.url == "salt://gdl-releases/shop/shop-1.0.0.tar.gz"
    hash_line = first.archive.with_name("shop-1.0.0.tar.gz.sha256").read_text()
    assert hash_line == f"{first.sha256}  shop-1.0.0.tar.gz\n"
    assert hashlib.sha256(first.archive.read_bytes()).hexdigest() == first.sha256

    second = release_build.build_release(
        tmp_path / "apps", "shop", files, tmp_path / "cache", run=run
    )
    assert not second.changed and second.sha256 == first.sha256

    with tarfile.open(first.archive) as archive:
        names = archive.getnames()
        assert all(member.mtime == 0 for member in archive.getmembers())
    assert "shop.py" in names and "static/style.css" in names
    # The requirements come installed, with the master's bytecode and without scripts
    # naming the master's Python; the app's own leftover bytecode stays out.
    assert "site-packages/gunicorn/__init__.py" in names
    assert "site-packages/gunicorn/__pycache__/__init__.pyc" in names
    assert not any(name.startswith(("wheelhouse/", "site-packages/bin")) for name in names)
    assert "RELEASE.json" in names
    assert not any("__pycache__" in name for name in names if not name.startswith("site-"))
    assert not any(name.startswith("/") or name.startswith("shop/") for name in names)

    # A change to the app's files under the same version is refused (see
    # test_a_built_release_never_changes_under_its_version); a new version is a new archive.
    (app_dir / "shop.py").write_text("app = None\n")
    manifest = app_dir / "app.yaml"
    manifest.write_text(manifest.read_text().replace("version: 1.0.0", "version: 1.0.1"))
    third = release_build.build_release(
        tmp_path / "apps", "shop", files, tmp_path / "cache", run=run
    )
    assert third.changed and third.sha256 != first.sha256
    assert release_build.list_releases(files, "shop") == ["1.0.0", "1.0.1"]


def test_release_of_the_repo_blog_has_its_posts(tmp_path):
    shutil.copytree(REPO_APPS / "blog", tmp_path / "apps" / "blog")
    run = fake_pip({"flask-3.1.3-py3-none-any.whl": b"wheel"})
    release = release_build.build_release(
        tmp_path / "apps", "blog", tmp_path / "files", tmp_path / "c", run=run
    )
    with tarfile.open(release.archive) as archive:
        names = archive.getnames()
    assert "app.yaml" in names and "blog/templates/base.html" in names
    assert sum(name.startswith("posts/") and name.endswith(".md") for name in names) >= 3


def test_a_built_release_never_changes_under_its_version(tmp_path):
    app_dir = make_app(tmp_path / "apps")
    run = fake_pip({"gunicorn-27.0.1-py3-none-any.whl": b"wheel"})
    files = tmp_path / "files"
    first = release_build.build_release(tmp_path / "apps", "shop", files, tmp_path / "c", run=run)
    before = first.archive.read_bytes()
    for change in (
        lambda: (app_dir / "shop.py").write_text("app = None\n"),
        lambda: (app_dir / "static" / "new.css").write_text("b {}\n"),
        lambda: (app_dir / "shop.py").chmod(0o755),
    ):
        change()
        with pytest.raises(GdlError) as caught:
            release_build.build_release(tmp_path / "apps", "shop", files, tmp_path / "c", run=run)
        assert str(caught.value) == (
            "release 1.0.0 of shop is already built, with other content: a release never "
            "changes under its version: give this one a new version in its app.yaml "
            "(version: 1.0.0 is taken)"
        )
        assert first.archive.read_bytes() == before
    assert len(run.calls) == 3  # the first build's `pip wheel`, `pip install`, compile: no more


def test_same_release_again_without_the_wheel_cache_changes_nothing(tmp_path):
    make_app(tmp_path / "apps")
    files = tmp_path / "files"
    first = release_build.build_release(
        tmp_path / "apps", "shop", files, tmp_path / "c1", run=fake_pip({"g.whl": b"one"})
    )
    # Wheels rebuilt with other bytes (a fresh cache) do not make it another release.
    again = release_build.build_release(
        tmp_path / "apps", "shop", files, tmp_path / "c2", run=fake_pip({"g.whl": b"two"})
    )
    assert not again.changed and again.sha256 == first.sha256


@pytest.mark.parametrize("where", ["file", "directory", "dangling", "hard link"])
def test_links_that_leave_the_release_are_refused(tmp_path, where):
    app_dir = make_app(tmp_path / "apps")
    secret = tmp_path / "master.pem"
    secret.write_text("-----BEGIN PRIVATE KEY-----\n")
    (tmp_path / "outside").mkdir()
    if where == "file":
        (app_dir / "static" / "key.pem").symlink_to(secret)
    elif where == "directory":
        (app_dir / "static" / "etc").symlink_to(tmp_path / "outside")
    elif where == "dangling":
        (app_dir / "static" / "gone").symlink_to(tmp_path / "nothing")
    else:
        (app_dir / "static" / "key.pem").hardlink_to(secret)
    run = fake_pip({"gunicorn-27.0.1-py3-none-any.whl": b"wheel"})
    with pytest.raises(
        GdlError, match=r"^static/\S+ in release 1.0.0 of shop (is a link|has other)"
    ):
        release_build.build_release(
            tmp_path / "apps", "shop", tmp_path / "files", tmp_path / "c", run=run
        )
    assert not (tmp_path / "files").exists()


def test_links_inside_the_release_are_packed_as_their_files(tmp_path):
    app_dir = make_app(tmp_path / "apps")
    (app_dir / "static" / "style.css").write_text("body {}\n")
    (app_dir / "static" / "main.css").symlink_to("style.css")
    run = fake_pip({"gunicorn-27.0.1-py3-none-any.whl": b"wheel"})
    release = release_build.build_release(
        tmp_path / "apps", "shop", tmp_path / "files", tmp_path / "c", run=run
    )
    with tarfile.open(release.archive) as archive:
        assert archive.extractfile("static/main.css").read() == b"body {}\n"


def test_wheels_are_built_as_an_unprivileged_user_with_a_time_limit(tmp_path):
    make_app(tmp_path / "apps")
    manifest = apps.load_manifest(tmp_path / "apps", "shop")
    run = fake_pip({"gunicorn-27.0.1-py3-none-any.whl": b"wheel"})
    seen: list[dict] = []

    def recording(command, **kwargs):
        seen.append(kwargs)
        return run(command, **kwargs)

    release_build.build_wheelhouse(manifest, tmp_path / "cache", run=recording)
    (kwargs,) = seen
    assert kwargs["timeout"] == wheel_build.WHEEL_TIMEOUT
    assert kwargs["user"] == ("nobody" if os.geteuid() == 0 else None)
    assert kwargs["env"]["HOME"] == kwargs["cwd"]
    assert not any(key.startswith("OS_") for key in kwargs["env"])


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping to another user needs root")
def test_the_bounded_runner_drops_root_and_kills_the_whole_build_at_its_time_limit(tmp_path):
    done = wheel_build.run_bounded(["id", "-u"], timeout=30, user="nobody")
    assert done.stdout.strip() == str(pwd.getpwnam("nobody").pw_uid)
    # The build user cannot reach pytest's private tmp_path: a directory of its own.
    shared = Path(tempfile.mkdtemp(prefix="gdl-test-"))
    try:
        shared.chmod(0o777)
        marker = shared / "pid"
        started = time.monotonic()
        with pytest.raises(subprocess.TimeoutExpired):
            wheel_build.run_bounded(
                ["sh", "-c", f"sleep 60 & echo $! > {marker}; wait"], timeout=1, user="nobody"
            )
        assert time.monotonic() - started < 30
        child = int(marker.read_text())
    finally:
        shutil.rmtree(shared)
    time.sleep(0.2)
    # The build's own children die with it (a zombie waiting for init at most).
    stat = Path(f"/proc/{child}/stat")
    assert not stat.exists() or stat.read_text().split(") ")[1].startswith("Z")


def test_a_wheel_build_that_runs_too_long_is_one_line(tmp_path):
    make_app(tmp_path / "apps")
    manifest = apps.load_manifest(tmp_path / "apps", "shop")

    def hanging(command, **kwargs):
        raise subprocess.TimeoutExpired(command, kwargs["timeout"])

    with pytest.raises(GdlError, match="took longer than 600 s: check apps/shop/requirements"):
        release_build.build_wheelhouse(manifest, tmp_path / "cache", run=hanging)
    assert list((tmp_path / "cache" / "shop").iterdir()) == []
