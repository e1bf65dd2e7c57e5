"""The servers' package source: the Salt wheelhouse's build steps and the read-only HTTP server."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from gdl import package_source, salt_wheelhouse, wheel_build
from gdl.config import Settings
from gdl.errors import ConfigError, GdlError, LockHeld

TARGET = salt_wheelhouse.Target(salt_version="3008.4", python="3.11", arch="x86_64")


def fake_pip(missing: list[str] | None = None, built_name: str = "{name}-1.0-py3-none-any.whl"):
    """Stands in for pip: `wheel` writes one wheel, `download` fails once per missing name."""
    missing = list(missing or [])
    calls: list[list[str]] = []

    def run(command, **kwargs):
        calls.append(command)
        verb = command[3]
        if verb == "wheel":
            target = Path(command[command.index("--wheel-dir") + 1])
            name = command[-1].split("=")[0].split(">")[0]
            (target / built_name.format(name=name)).write_bytes(b"wheel")
            return subprocess.CompletedProcess(command, 0, "", "")
        if missing:
            name = missing.pop(0)
            error = f"ERROR: No matching distribution found for {name}>=0.3.0; python_version\n"
            return subprocess.CompletedProcess(command, 1, "", error)
        dest = Path(command[command.index("--dest") + 1])
        for name in (
            "salt-3008.4-py3-none-any.whl",
            "pip-24.0-py3-none-any.whl",
            "pyzmq-26.0.0-cp311-cp311-manylinux_2_28_x86_64.whl",
        ):
            (dest / name).write_bytes(b"wheel")
        return subprocess.CompletedProcess(command, 0, "", "")

    run.calls = calls
    return run


def test_the_wheelhouse_is_for_the_servers_python_and_platform_and_built_once(tmp_path):
    run = fake_pip()
    first = salt_wheelhouse.ensure_salt_wheelhouse(tmp_path, TARGET, run=run)
    assert first == tmp_path / "salt-3008.4-cp311-x86_64"
    assert sorted(p.name for p in first.iterdir()) == [
        "pip-24.0-py3-none-any.whl",
        "pyzmq-26.0.0-cp311-cp311-manylinux_2_28_x86_64.whl",
        "salt-3008.4-py3-none-any.whl",
    ]
    wheel, download = run.calls
    # Salt is an sdist: built into a wheel first, without its dependencies.
    assert wheel[3:4] == ["wheel"] and "--no-deps" in wheel and wheel[-1] == "salt==3008.4"
    assert download[3] == "download" and "--only-binary=:all:" in download
    assert download[download.index("--python-version") + 1] == "3.11"
    assert download[download.index("--implementation") + 1] == "cp"
    assert "cp311" in download and "manylinux_2_36_x86_64" in download
    assert "manylinux_2_17_x86_64" in download and download[-2:] == ["salt==3008.4", "pip"]
    # Missing only: a second call builds nothing.
    assert salt_wheelhouse.ensure_salt_wheelhouse(tmp_path, TARGET, run=run) == first
    assert len(run.calls) == 2


def test_a_dependency_without_a_wheel_is_built_from_source(tmp_path):
    run = fake_pip(missing=["timelib"])
    salt_wheelhouse.ensure_salt_wheelhouse(tmp_path, TARGET, run=run)
    verbs = [(c[3], c[-1]) for c in run.calls]
    assert verbs[:3] == [
        ("wheel", "salt==3008.4"),
        ("download", "pip"),
        ("wheel", "timelib>=0.3.0"),
    ]
    assert verbs[3][0] == "download"


def test_a_wheel_the_servers_cannot_run_is_refused_in_one_line(tmp_path):
    run = fake_pip(missing=["timelib"], built_name="{name}-1.0-cp312-cp312-linux_x86_64.whl")
    with pytest.raises(GdlError) as caught:
        salt_wheelhouse.ensure_salt_wheelhouse(tmp_path, TARGET, run=run)
    assert "has no wheel for the servers' cp311 x86_64" in str(caught.value)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / TARGET.name).exists()


def test_a_build_held_by_another_process_too_long_is_refused_in_one_line(tmp_path):
    lock = tmp_path / f".{TARGET.name}.lock"
    holding = (
        "import fcntl, sys, time\n"
        "handle = open(sys.argv[1], 'a')\n"
        "fcntl.lockf(handle, fcntl.LOCK_EX)\n"
        "print('held', flush=True)\n"
        "time.sleep(60)\n"
    )
    # A record lock is per process: the holder must be another process.
    holder = subprocess.Popen(
        [sys.executable, "-c", holding, str(lock)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        run = fake_pip()
        with pytest.raises(LockHeld) as caught:
            salt_wheelhouse.ensure_salt_wheelhouse(tmp_path, TARGET, run=run, lock_timeout=0.3)
    finally:
        holder.kill()
        holder.wait()
    message = str(caught.value)
    assert "\n" not in message
    assert f"building the wheelhouse {TARGET.name} for more than 0 s" in message
    assert str(lock) in message
    assert run.calls == []  # nothing built while another build holds it
    # The holder gone, the build goes ahead.
    assert salt_wheelhouse.ensure_salt_wheelhouse(tmp_path, TARGET, run=run, lock_timeout=0.3)


def test_waiting_for_the_wheelhouse_outlasts_every_step_its_builder_may_take():
    steps = 2 * salt_wheelhouse.MAX_SOURCE_BUILDS  # a build and a download per round
    assert steps * wheel_build.WHEEL_TIMEOUT < salt_wheelhouse.WHEELHOUSE_LOCK_TIMEOUT


def test_a_failed_download_says_so_in_one_line_and_leaves_nothing(tmp_path):
    def failing(command, **kwargs):
        if command[3] == "wheel":
            return fake_pip()(command, **kwargs)
        return subprocess.CompletedProcess(command, 1, "", "ERROR: connection refused\n")

    with pytest.raises(GdlError) as caught:
        salt_wheelhouse.ensure_salt_wheelhouse(tmp_path, TARGET, run=failing)
    message = str(caught.value)
    assert (
        "downloading Salt 3008.4's wheels for cp311 x86_64 failed (ERROR: connection refused)"
        in message
    )
    assert "\n" not in message
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == []


def test_target_follows_the_settings_and_runs_tags():
    settings = Settings.from_opts({"gdl": {"server_python": "3.12", "server_arch": "aarch64"}})
    target = salt_wheelhouse.Target.for_servers(settings)
    assert target.name.endswith("-cp312-aarch64")
    assert target.runs("x-1-py3-none-any.whl")
    assert target.runs("x-1-cp312-cp312-manylinux_2_28_aarch64.whl")
    assert target.runs("x-1-cp312-abi3-linux_aarch64.whl")
    assert not target.runs("x-1-cp311-cp311-manylinux_2_28_aarch64.whl")
    assert not target.runs("x-1-cp312-cp312-manylinux_2_28_x86_64.whl")
    assert settings.package_port == 4507


@pytest.mark.parametrize(
    "section",
    [
        {"package_port": 0},
        {"package_port": "4507"},
        {"server_python": "3"},
        {"server_arch": "x 86"},
    ],
)
def test_bad_package_settings_are_one_line(section):
    with pytest.raises(ConfigError) as caught:
        Settings.from_opts({"gdl": section})
    assert "\n" not in str(caught.value)


@pytest.fixture
def served(tmp_path):
    root = tmp_path / "package-source"
    house = root / TARGET.name
    house.mkdir(parents=True)
    (house / "salt-3008.4-py3-none-any.whl").write_bytes(b"salt wheel")
    (house / "pip-24.0-py3-none-any.whl").write_bytes(b"pip wheel")
    (root / ".salt.lock").write_text("")
    (tmp_path / "secret").write_text("master key")
    os.symlink(tmp_path / "secret", house / "link.whl")
    os.symlink(tmp_path, root / "outside")
    server = package_source.PackageServer(root, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def ask(port, path, method="GET"):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.putrequest(method, path, skip_host=False, skip_accept_encoding=True)
    connection.endheaders()
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response.status, body


def test_the_wheelhouse_is_listed_and_its_wheels_served(served):
    status, page = ask(served, f"/{TARGET.name}/")
    assert status == 200
    assert b'href="salt-3008.4-py3-none-any.whl"' in page
    assert b'href="pip-24.0-py3-none-any.whl"' in page
    assert b"link.whl" not in page
    assert ask(served, f"/{TARGET.name}/salt-3008.4-py3-none-any.whl") == (200, b"salt wheel")
    assert ask(served, f"/{TARGET.name}/pip-24.0-py3-none-any.whl", "HEAD") == (200, b"")
    root_status, root_page = ask(served, "/")
    assert root_status == 200 and b".salt.lock" not in root_page and b"outside" not in root_page
    assert ask(served, f"/{TARGET.name}")[0] == 301


@pytest.mark.parametrize(
    "path",
    [
        "/../secret",
        "/%2e%2e/secret",
        f"/{TARGET.name}/../../secret",
        f"/{TARGET.name}/%2E%2E/%2e%2e/secret",
        f"/{TARGET.name}/link.whl",
        "/outside/secret",
        "/.salt.lock",
        "//etc/passwd",
        "/etc/passwd",
        "/%00",
    ],
)
def test_nothing_outside_the_wheelhouse_is_served(served, path):
    status, body = ask(served, path)
    assert status in (400, 403, 404)
    assert b"master key" not in body and b"root:" not in body


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS"])
def test_only_get_and_head(served, method):
    assert ask(served, f"/{TARGET.name}/salt-3008.4-py3-none-any.whl", method)[0] == 501


def test_openstack_servers_install_from_the_masters_package_source(tmp_path, monkeypatch):
    from gdl.providers.openstack.provider import OpenStackProvider

    built: list[tuple[Path, salt_wheelhouse.Target]] = []

    def ensure(root, target, *args, **kwargs):
        built.append((Path(root), target))
        return Path(root) / target.name

    monkeypatch.setattr(salt_wheelhouse, "ensure_salt_wheelhouse", ensure)
    settings = Settings.from_opts(
        {
            "gdl": {
                "state_dir": str(tmp_path),
                "package_port": 14507,
                "openstack": {
                    "image": "debian-12",
                    "network": "private",
                    "master_address": "192.0.2.10",
                    "http_proxy": "http://proxy.example:3128",
                },
            }
        }
    )
    made = OpenStackProvider.from_settings(settings)
    said: list[str] = []
    source = made.salt_source(said.append)
    ((root, target),) = built
    assert root == tmp_path / "package-source"
    assert (
        target.python == "3.11" and target.salt_version == salt_wheelhouse.salt.version.__version__
    )
    assert source.find_links == f"http://192.0.2.10:14507/{target.name}/"
    assert source.requirement == f"salt=={target.salt_version}"
    assert (source.http_proxy, source.no_proxy) == ("http://proxy.example:3128", "192.0.2.10")
    # Building for the first time is said (it takes minutes).
    assert said == [f"building {target.name} for the servers' first boot (once)"]
    # No servers asked for: nothing is built.
    assert made.create_servers([]) == [] and len(built) == 1


def test_an_image_with_salt_builds_no_wheelhouse(tmp_path, monkeypatch):
    from gdl.providers.openstack.provider import OpenStackProvider

    def ensure(*args, **kwargs):
        raise AssertionError("no wheelhouse is built for an image with Salt")

    monkeypatch.setattr(salt_wheelhouse, "ensure_salt_wheelhouse", ensure)
    section = {"image": "i", "network": "n", "master_address": "192.0.2.10"}
    settings = Settings.from_opts(
        {"gdl": {"state_dir": str(tmp_path), "openstack": {**section, "salt_in_image": True}}}
    )
    assert OpenStackProvider.from_settings(settings).salt_source is None
