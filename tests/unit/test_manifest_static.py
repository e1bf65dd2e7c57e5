"""An app's ``static`` reaches nginx's ``alias``: a hostile value is refused before a build.

The value is tried the way a new user or an attacker would write it, with the
directory it names made in the app where a file system allows it, so only the
manifest's check stands between the value and nginx.  Each is refused with one
line, by a build (``apps/<app>``) and by a deploy's ``source=``, before pip
runs or a file of the master's is written; a release already built with such a
value is never handed to the states.  An accepted value, rendered by Salt into
the app role's nginx site, is one quoted path a real nginx serves from.
"""

from __future__ import annotations

import shlex
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from gdl import apps, release_build, releases
from gdl.config import Settings
from gdl.errors import InvalidRequest
from tests.support.local_salt import SALT_CALL, LocalSalt, release_entry
from tests.unit.test_states_render import SECRET, merged, render_file, state_args, with_gdl

# (id, static as the manifest gives it, a directory to make in the app for it or None)
HOSTILE: list[tuple[str, str, str | None]] = [
    ("semicolon", "static;", "static;"),
    ("new-directive", "static/; autoindex on", "static/; autoindex on"),
    ("closing-brace", 'static/";} server { listen 81; }', None),
    ("double-quote", 'static"', 'static"'),
    ("single-quote", "static'", "static'"),
    ("backslash", "static\\", "static\\"),
    ("newline", "static\nlocation", None),
    ("trailing-newline", "static\n", None),
    ("carriage-return", "static\r", None),
    ("tab", "static\t", None),
    ("space", "static files", "static files"),
    ("nginx-variable", "$document_root", "$document_root"),
    ("nginx-variable-braces", "static${uri}", None),
    ("shell-substitution", "$(id)", "$(id)"),
    ("dot-dot", "..", None),
    ("dot-dot-inside", "static/../static", None),
    ("dot-dot-deep", "static/../../../../etc", None),
    ("dot", ".", None),
    ("dot-slash", "./static", None),
    ("hidden", ".git", ".git"),
    ("absolute", "/etc", None),
    ("root", "/", None),
    ("home", "~root", None),
    ("trailing-slash", "static/", None),
    ("double-slash", "static//css", "static/css"),
    ("unicode-letter", "st\u00e4tic", "st\u00e4tic"),
    ("unicode-lookalike", "\uff53tatic", "\uff53tatic"),
    ("unicode-line-separator", "static\u2028", None),
    ("nul", "static\x00", None),
    ("escape", "\x1b[31mstatic", None),
    ("glob", "stat*", "stat*"),
    ("too-long", "s" * 129, "s" * 129),
    # Names a release leaves out of the app, or that a server makes in it.
    ("site-packages", "site-packages", "site-packages"),
    ("wheelhouse", "wheelhouse", "wheelhouse"),
    ("pycache-deep", "static/__pycache__", "static/__pycache__"),
    ("virtualenv", "venv", "venv"),
    ("virtualenv-part", "venv/lib", "venv/lib"),
]


def make_app(root: Path, static: object, directory: str | None) -> Path:
    """App ``shop`` under ``root``, its manifest naming ``static``, ``directory`` made."""
    app_dir = root / "shop"
    (app_dir / "static" / "css").mkdir(parents=True)
    (app_dir / "requirements.txt").write_text("gunicorn==27.0.1\n")
    (app_dir / "shop.py").write_text("def app(environ, start_response):\n    return []\n")
    if directory is not None:
        (app_dir / directory).mkdir(parents=True, exist_ok=True)
    manifest = {
        "name": "shop",
        "version": "1.0.0",
        "wsgi": "shop:app",
        "requirements": "requirements.txt",
        "health": "/healthz",
        "static": static,
    }
    (app_dir / "app.yaml").write_text(yaml.safe_dump(manifest, allow_unicode=True))
    return app_dir


def never_run(command, **_kwargs):
    raise AssertionError(f"pip ran for a refused manifest: {command}")


def assert_one_line(refusal: InvalidRequest) -> str:
    line = str(refusal)
    assert "\n" not in line and len(line) < 300, line
    assert line.isprintable(), repr(line)
    assert ": " in line, line  # what is wrong: what to do
    return line


@pytest.mark.parametrize(
    ("static", "directory"), [c[1:] for c in HOSTILE], ids=[c[0] for c in HOSTILE]
)
def test_a_hostile_static_is_refused_by_a_build_before_anything_is_built(
    tmp_path, static, directory
):
    make_app(tmp_path / "apps", static, directory)
    files, cache = tmp_path / "files", tmp_path / "wheelhouse"
    with pytest.raises(InvalidRequest) as refused:
        release_build.build_release(tmp_path / "apps", "shop", files, cache, run=never_run)
    line = assert_one_line(refused.value)
    # Refused for the value itself, whatever the app's directory holds.
    assert "static" in line and "not a directory of the app" not in line
    assert not files.exists() and not cache.exists()


@pytest.mark.parametrize(
    ("static", "directory"), [c[1:] for c in HOSTILE], ids=[c[0] for c in HOSTILE]
)
def test_a_hostile_static_is_refused_by_a_deploy_from_a_directory(tmp_path, static, directory):
    source = make_app(tmp_path / "elsewhere", static, directory)
    settings = Settings(state_dir=tmp_path / "state", source_dir=tmp_path / "checkout")

    def builder(*_args, **_kwargs):
        raise AssertionError("a release was built from a refused manifest")

    with pytest.raises(InvalidRequest) as refused:
        releases.prepare_release(settings, "shop", None, source, builder=builder)
    line = assert_one_line(refused.value)
    assert "static" in line and "not a directory of the app" not in line
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize("static", [c[1] for c in HOSTILE], ids=[c[0] for c in HOSTILE])
def test_a_release_built_with_a_hostile_static_is_never_given_to_the_states(static):
    """A release built by an older gdl, or put on the master by hand, is left out of pillar."""
    values = {
        "wsgi": "shop:app",
        "requirements": "requirements.txt",
        "health": "/healthz",
        "static": static,
    }
    assert not apps.release_values_are_safe(values)
    assert apps.release_values_are_safe({**values, "static": "static/css"})


def test_a_static_linked_outside_the_app_is_refused(tmp_path):
    make_app(tmp_path / "apps", "assets", None)
    (tmp_path / "apps" / "shop" / "assets").symlink_to("/etc")
    with pytest.raises(InvalidRequest) as refused:
        apps.load_manifest(tmp_path / "apps", "shop")
    assert "not a directory of the app" in assert_one_line(refused.value)


@pytest.mark.parametrize("static", ["static", "static/css", "Static_2.0/css-min", None, ""])
def test_plain_paths_inside_the_app_are_accepted(tmp_path, static):
    make_app(tmp_path / "apps", static, static or None)
    assert apps.load_manifest(tmp_path / "apps", "shop").static == (static or None)


def free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.mark.skipif(not SALT_CALL.exists(), reason=f"{SALT_CALL} is not installed")
@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")
def test_an_accepted_static_is_one_quoted_path_nginx_serves(tmp_path):
    """The widest accepted value, through Salt's renderer, into a real nginx on loopback."""
    static = "Static_2.0/css-min"
    assert apps.load_manifest(make_app(tmp_path / "apps", static, static).parent, "shop")
    base = tmp_path / "srv"
    release = {**release_entry("blog", "1.0.0"), "static": static}
    port, upstream = free_loopback_port(), free_loopback_port()  # nothing answers upstream
    roles = {
        "app": {
            "base_dir": str(base),
            "nginx": {"port": f"127.0.0.1:{port}"},
            "gunicorn": {"bind": f"127.0.0.1:{upstream}"},
        }
    }
    pillar = with_gdl(releases={"1.0.0": release}, roles=roles)
    states = LocalSalt(tmp_path / "salt", pillar, SECRET).show_sls("app-0-blog-dev", "gdl.app")
    site = render_file(state_args(states, "gdl-app-nginx-site")[1], merged(pillar, SECRET))
    served = base / "blog" / "current" / static
    (alias,) = [line.strip() for line in site.splitlines() if line.strip().startswith("alias ")]
    # One double-quoted token: nothing in it that nginx reads as a quote, an escape or a variable.
    assert alias == f'alias "{served}/";'
    assert shlex.split(alias[len("alias ") : -1]) == [f"{served}/"]

    served.mkdir(parents=True)
    (served / "site.css").write_text("body { color: teal }\n")
    (served.parent / "secret.txt").write_text("not for the web\n")
    logs = tmp_path / "logs"
    logs.mkdir()
    # The test's nginx logs in the test's directory; the alias is as rendered.
    (tmp_path / "site.conf").write_text(site.replace("/var/log/nginx/", f"{logs}/"))
    (tmp_path / "nginx.conf").write_text(
        f"daemon off;\nmaster_process off;\npid {tmp_path}/nginx.pid;\n"
        f"error_log {logs}/error.log;\nevents {{}}\n"
        f"http {{\n    include /etc/nginx/mime.types;\n    include {tmp_path}/site.conf;\n"
        f"    client_body_temp_path {tmp_path}/body;\n    proxy_temp_path {tmp_path}/proxy;\n}}\n"
    )
    nginx = subprocess.Popen(
        ["nginx", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        for _ in range(200):  # until it listens, or has stopped
            if nginx.poll() is not None:
                pytest.fail(f"nginx stopped: {nginx.stderr.read().decode()}")
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        assert get(port, "/static/site.css") == (200, b"body { color: teal }\n")
        # Nothing beside the directory: the location and the alias both end in '/'.
        for path in ("/static../secret.txt", "/static/../secret.txt", "/static/%2e%2e/secret.txt"):
            status, body = get(port, path)
            assert status != 200 and b"not for the web" not in body, path
    finally:
        nginx.terminate()
        nginx.wait(timeout=30)
