"""App manifests (gdl.apps) and release archives (gdl.release_build), without a package index."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from gdl import apps, release_build
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
    """A stand-in for `pip wheel` that writes the given files into --wheel-dir."""
    calls: list[list[str]] = []

    def run(command, **_kwargs):
        calls.append(command)
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
    assert "wheelhouse/gunicorn-27.0.1-py3-none-any.whl" in names
    assert "RELEASE.json" in names
    assert not any("__pycache__" in name for name in names)
    assert not any(name.startswith("/") or name.startswith("shop/") for name in names)

    # A change to the app's files makes a new archive under the same version.
    (app_dir / "shop.py").write_text("app = None\n")
    third = release_build.build_release(
        tmp_path / "apps", "shop", files, tmp_path / "cache", run=run
    )
    assert third.changed and third.sha256 != first.sha256
    assert release_build.list_releases(files, "shop") == ["1.0.0"]


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
