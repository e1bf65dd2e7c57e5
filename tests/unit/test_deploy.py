"""gdl.deploy: the rolling deploy and rollback against a fake Salt master."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from gdl import apps, envstore, pillar, release_build, releases, spec
from gdl import rollout as rolling
from gdl.config import Settings
from gdl.errors import InvalidRequest, NotFound
from gdl.flows import deploy
from gdl.providers.base import RUNNING, EnvNetwork, Server

REPO_APPS = Path(__file__).resolve().parents[2] / "apps"
LBS = ("lb-0-blog-dev", "lb-1-blog-dev")


class FakeOps:
    """SaltOps over pretend servers: each runs a release; some releases are unhealthy."""

    def __init__(self, members: list[str], running: str = "1.0.0") -> None:
        self.version = dict.fromkeys(members, running)
        self.unhealthy: set[str] = set()
        self.failing_state: set[str] = set()
        self.calls: list[tuple[str, str, tuple]] = []  # (minion, function, args)
        self.in_rotation = set(members)

    def ping(self, minions: list[str], timeout: float) -> set[str]:
        return set(minions)

    def call(self, minions: list[str], function: str, args: list[Any], timeout: float = 10):
        answers = {}
        for minion in minions:
            self.calls.append((minion, function, tuple(args)))
            if function == "gdl_lb.drain":
                self.in_rotation.discard(args[0])
                answers[minion] = True
            elif function == "gdl_lb.ready":
                self.in_rotation.add(args[0])
                answers[minion] = True
            elif function == "saltutil.sync_modules":
                answers[minion] = ["modules.gdl_lb"]
            elif function in ("gdl_lb.wait_drained", "gdl_lb.wait_up"):
                answers[minion] = True
            elif function == "gdl_lb.check_http":
                url, _host, wanted, _timeout = args
                name = next(n for n in self.version if url.startswith(f"http://{address(n)}/"))
                running = self.version[name]
                status = 500 if running in self.unhealthy else 200
                healthy = status == 200 and wanted in (None, running)
                answers[minion] = {
                    "healthy": healthy,
                    "status": status,
                    "version": running,
                    "detail": "ok" if healthy else f"answered {status}",
                }
            else:
                answers[minion] = True
        return answers

    def apply_state(self, minions: list[str], sls: str, pillar: dict, timeout: float = 600):
        wanted = pillar["gdl"]["version"]
        answers = {}
        for minion in minions:
            self.calls.append((minion, "state.apply", (sls, wanted)))
            if minion in self.failing_state:
                answers[minion] = {
                    "cmd_|-gdl-app-virtualenv_|-x_|-run": {
                        "result": False,
                        "comment": "pip failed\nbadly",
                        "__id__": "gdl-app-virtualenv",
                        "__run_num__": 3,
                    }
                }
                continue
            self.version[minion] = wanted
            answers[minion] = {"file_|-gdl-app-current_|-x_|-symlink": {"result": True}}
        return answers

    def switched(self) -> list[tuple[str, str]]:
        return [(m, a[1]) for m, f, a in self.calls if f == "state.apply"]


def address(name: str) -> str:
    return f"10.9.0.{10 + int(name.split('-')[1])}"


def members(count: int) -> tuple[rolling.Member, ...]:
    return tuple(
        rolling.Member(f"app-{i}-blog-dev", address(f"app-{i}-blog-dev")) for i in range(count)
    )


def rollout(count: int = 4, batch: int = 1) -> rolling.Rollout:
    return rolling.Rollout(
        app="blog",
        env="dev",
        version="1.1.0",
        previous="1.0.0",
        health="/healthz",
        previous_health="/healthz",
        lbs=LBS,
        members=members(count),
        batch=batch,
    )


def test_batches_keep_order_and_the_last_may_be_short():
    assert rolling.batches(range(5), 2) == [[0, 1], [2, 3], [4]]
    assert rolling.batches([], 1) == []


def test_state_failure_names_the_first_failed_state_in_one_line():
    ok = {"a": {"result": True}, "b": {"result": None}}
    assert rolling.state_failure(ok) is None
    failed = {
        "late": {"result": False, "comment": "later", "__id__": "late", "__run_num__": 9},
        "early": {"result": False, "comment": "no\nspace", "__id__": "early", "__run_num__": 1},
    }
    assert rolling.state_failure(failed) == "early failed: no space"
    assert rolling.state_failure(None) == "its minion did not answer"
    assert "Rendering SLS" in rolling.state_failure(["Rendering SLS 'base:gdl.app' failed"])
    # A command run without a shell (module.run of cmd.run_all): its exit and last line.
    venv = {
        "result": False,
        "comment": "'cmd.run_all' failed: (error message N/A)",
        "__id__": "gdl-app-virtualenv-made",
        "changes": {
            "cmd.run_all": {"retcode": 1, "stdout": "", "stderr": "Error\n[Errno 28] No space"}
        },
    }
    assert rolling.state_failure({"v": venv}) == (
        "gdl-app-virtualenv-made failed: 'cmd.run_all' failed: (error message N/A) "
        "(exit 1: [Errno 28] No space)"
    )


def test_rolls_every_server_one_at_a_time_through_both_lbs():
    names = [m.name for m in members(4)]
    ops = FakeOps(names)
    progress: list[str] = []
    switched = rolling.Roller(ops, rollout(4), progress.append).run()
    assert switched == names
    assert set(ops.version.values()) == {"1.1.0"}
    assert ops.in_rotation == set(names)
    # Each server: drained on both LBs, waited for, switched, checked, readied, counted UP,
    # before the next one leaves rotation.
    first = [(m, f) for m, f, a in ops.calls if a and a[0] in ("app-0-blog-dev", "gdl.app")][:8]
    assert first == [
        ("lb-0-blog-dev", "gdl_lb.drain"),
        ("lb-1-blog-dev", "gdl_lb.drain"),
        ("lb-0-blog-dev", "gdl_lb.wait_drained"),
        ("lb-1-blog-dev", "gdl_lb.wait_drained"),
        ("app-0-blog-dev", "state.apply"),
        ("lb-0-blog-dev", "gdl_lb.ready"),
        ("lb-1-blog-dev", "gdl_lb.ready"),
        ("lb-0-blog-dev", "gdl_lb.wait_up"),
    ]
    drains = [a[0] for _, f, a in ops.calls if f == "gdl_lb.drain"]
    readies = [a[0] for _, f, a in ops.calls if f == "gdl_lb.ready"]
    assert drains == readies == [n for n in names for _ in LBS]


@pytest.mark.parametrize("batch", [3, 4, 50])
def test_a_batch_never_takes_every_server_out_of_rotation(batch):
    names = [m.name for m in members(3)]
    ops = FakeOps(names)
    rolling.Roller(ops, rollout(3, batch=batch), lambda _: None).run()
    out: set[str] = set()
    most = 0
    for _, function, args in ops.calls:
        if function == "gdl_lb.drain":
            out.add(args[0])
        elif function == "gdl_lb.ready":
            out.discard(args[0])
        most = max(most, len(out))
    assert most == 2
    assert [m for m, f, _ in ops.calls if f == "state.apply"] == names


def test_batches_leave_rotation_together():
    names = [m.name for m in members(4)]
    ops = FakeOps(names)
    rolling.Roller(ops, rollout(4, batch=2), lambda _: None).run()
    applies = [m for m, f, _ in ops.calls if f == "state.apply"]
    assert applies == names
    first_ready = next(i for i, c in enumerate(ops.calls) if c[1] == "gdl_lb.ready")
    drained_before = {a[0] for _, f, a in ops.calls[:first_ready] if f == "gdl_lb.drain"}
    assert drained_before == {"app-0-blog-dev", "app-1-blog-dev"}


def test_an_unhealthy_release_goes_back_on_the_first_server_and_stops_the_deploy():
    names = [m.name for m in members(4)]
    ops = FakeOps(names)
    ops.unhealthy.add("1.1.0")
    with pytest.raises(rolling.DeployFailed) as caught:
        rolling.Roller(ops, rollout(4), lambda _: None).run()
    message = str(caught.value)
    assert "\n" not in message
    assert "app-0-blog-dev failed" in message and "answered 500" in message
    assert "back on 1.0.0 and in rotation" in message
    assert ops.switched() == [("app-0-blog-dev", "1.1.0"), ("app-0-blog-dev", "1.0.0")]
    assert set(ops.version.values()) == {"1.0.0"}
    assert ops.in_rotation == set(names)


def test_a_failed_state_is_a_failed_server_too():
    names = [m.name for m in members(3)]
    ops = FakeOps(names)
    ops.failing_state.add("app-1-blog-dev")
    with pytest.raises(rolling.DeployFailed) as caught:
        rolling.Roller(ops, rollout(3), lambda _: None).run()
    message = str(caught.value)
    assert "app-1-blog-dev failed, gdl-app-virtualenv failed: pip failed badly" in message
    assert "app-0-blog-dev already run 1.1.0" in message
    assert ops.version["app-2-blog-dev"] == "1.0.0"
    assert all(m != "app-2-blog-dev" for m, _ in ops.switched())


def test_servers_already_on_the_release_are_only_put_back_in_rotation():
    names = [m.name for m in members(2)]
    ops = FakeOps(names)
    ops.in_rotation.discard("app-0-blog-dev")  # left drained by a deploy that was killed
    switched = rolling.Roller(ops, rollout(2), lambda _: None).run(skip=["app-0-blog-dev"])
    assert switched == ["app-1-blog-dev"]
    touched = {f for _, f, a in ops.calls if a and a[0] == "app-0-blog-dev"}
    assert touched == {"gdl_lb.ready", "gdl_lb.wait_up"}
    assert ops.in_rotation == set(names)


# -- releases and the record ---------------------------------------------------------------


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    source = tmp_path / "src"
    (source / "apps").mkdir(parents=True)
    shutil.copytree(REPO_APPS / "blog", source / "apps" / "blog")
    return Settings(state_dir=tmp_path / "state", source_dir=source)


def fake_builder(manifest, files_dir, cache_dir, **_):
    archive = release_build.release_path(files_dir, manifest.name, manifest.version)
    archive.parent.mkdir(parents=True, exist_ok=True)
    archive.write_bytes(b"release")
    return release_build.Release(manifest.name, manifest.version, archive, "0" * 64, "0" * 64, True)


def bumped_copy(settings: Settings, tmp_path: Path, version: str) -> Path:
    copy = tmp_path / f"blog-{version}"
    shutil.copytree(settings.apps_dir / "blog", copy)
    manifest = yaml.safe_load((copy / "app.yaml").read_text())
    manifest["version"] = version
    (copy / "app.yaml").write_text(yaml.safe_dump(manifest))
    return copy


def test_prepare_release_from_a_source_directory(settings, tmp_path):
    source = bumped_copy(settings, tmp_path, "1.1.0")
    assert releases.prepare_release(settings, "blog", None, source, fake_builder) == ("1.1.0", True)
    assert releases.prepare_release(settings, "blog", "1.1.0", source, fake_builder)[0] == "1.1.0"
    with pytest.raises(InvalidRequest, match="disagrees"):
        releases.prepare_release(settings, "blog", "2.0.0", source, fake_builder)
    with pytest.raises(InvalidRequest, match="not a directory"):
        releases.prepare_release(settings, "blog", None, tmp_path / "nowhere", fake_builder)


def test_prepare_release_by_version(settings):
    assert releases.prepare_release(settings, "blog", None, None, fake_builder)[0] == "1.0.0"
    # A version built before is found without a source.
    assert releases.prepare_release(settings, "blog", "1.0.0", None, fake_builder)[0] == "1.0.0"
    with pytest.raises(InvalidRequest, match=r"release 9\.9 of blog is not on the master.*1\.0\.0"):
        releases.prepare_release(settings, "blog", "9.9", None, fake_builder)


def test_a_source_must_hold_the_same_app(settings, tmp_path):
    source = bumped_copy(settings, tmp_path, "1.1.0")
    with pytest.raises(InvalidRequest, match="names the app 'blog'"):
        releases.prepare_release(settings, "hello_world", None, source, fake_builder)


def test_release_manifest_is_written_beside_the_archive(settings, tmp_path):
    source = bumped_copy(settings, tmp_path, "1.1.0")
    (source / "app.yaml").write_text((source / "app.yaml").read_text() + "health: /ready\n")
    manifest = apps.load_manifest_from(source, "blog")

    def pip_wheel(command, **_):  # no wheels needed to check the manifest
        return subprocess.CompletedProcess(command, 0, "", "")

    files = release_build.files_dir(settings)
    release = release_build.build_release_of(manifest, files, tmp_path / "wheels", run=pip_wheel)
    assert release.archive == release_build.release_path(files, "blog", "1.1.0")
    path = release_build.release_manifest_path(files, "blog", "1.1.0")
    assert yaml.safe_load(path.read_text())["health"] == "/ready"
    assert releases.release_manifest(settings, "blog", "1.1.0")["health"] == "/ready"
    # Without a built release, the app's own manifest.
    assert releases.release_manifest(settings, "blog", "0.1")["health"] == "/healthz"


def test_record_keeps_the_release_and_the_one_before(tmp_path):
    record = envstore.new_record("blog", "dev", "local", 2, "m1.small")
    assert record.release is None
    first = record.with_release("1.0.0")
    second = first.with_release("1.1.0")
    assert (second.release, second.previous_release) == ("1.1.0", "1.0.0")
    assert second.with_release("1.1.0") is second
    back = second.with_release("1.0.0")
    assert (back.release, back.previous_release) == ("1.0.0", "1.1.0")
    envstore.save(tmp_path, back)
    assert envstore.load(tmp_path, "blog", "dev") == back


def test_a_record_from_before_releases_loads(tmp_path):
    record = envstore.new_record("blog", "dev", "local", 2, "m1.small")
    path = envstore.save(tmp_path, record)
    data = json.loads(path.read_text())
    del data["release"], data["previous_release"]
    path.write_text(json.dumps(data))
    assert envstore.load(tmp_path, "blog", "dev").release is None


def test_build_keeps_a_deployed_release(settings, monkeypatch):
    built = []
    monkeypatch.setattr(release_build, "build_release_for", lambda s, name: built.append(name))
    manifest = apps.load_manifest(settings.apps_dir, "blog")
    fresh = envstore.new_record("blog", "dev", "local", 2, "m1.small")
    record, release = releases.ensure_build_release(settings, fresh, manifest)
    assert (record.release, release, built) == ("1.0.0", "1.0.0", ["blog"])

    deployed = record.with_release("1.1.0")
    with pytest.raises(NotFound, match=r"runs release 1\.1\.0 of blog"):
        releases.ensure_build_release(settings, deployed, manifest)
    archive = release_build.release_path(release_build.files_dir(settings), "blog", "1.1.0")
    archive.parent.mkdir(parents=True)
    archive.write_bytes(b"release")
    record, release = releases.ensure_build_release(settings, deployed, manifest)
    assert (record, release, built) == (deployed, "1.1.0", ["blog"])


def test_pillar_carries_the_recorded_release(tmp_path):
    record = envstore.new_record("blog", "dev", "local", 1, "m1.small").with_release("1.1.0")
    network = EnvNetwork("10.9.0.250", "10.9.0.250", "10.9.0.0/24", 42, "10.9.0.1")
    server = Server("app-0-blog-dev", "blog", "dev", "app", RUNNING, "10.9.0.3", "m1.small", "x")
    common, _ = pillar.env_pillar(record, network, [server], ["app-0-blog-dev"])
    assert common["gdl"]["version"] == "1.1.0"
    fresh = envstore.new_record("blog", "dev", "local", 1, "m1.small")
    assert pillar.env_pillar(fresh, network, [server], [])[0]["gdl"]["version"] == ""


# -- the verbs -----------------------------------------------------------------------------


class FakeProvider:
    name = "local"

    def __init__(self, servers: list[Server]) -> None:
        self.servers = servers

    def list_servers(self, app=None, env=None):
        return list(self.servers)

    def find_env(self, app, env):
        return EnvNetwork("10.9.0.250", "10.9.0.250", "10.9.0.0/24", 42, "10.9.0.1")


class FakeContext:
    def __init__(self, settings: Settings, ops: FakeOps, servers: list[Server]) -> None:
        self.settings = settings
        self.salt = ops
        self.messages: list[str] = []
        self._provider = FakeProvider(servers)

    def progress(self, message: str) -> None:
        self.messages.append(message)

    def follow(self, app: str, env: str) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def provider(self, name: str) -> FakeProvider:
        return self._provider


def env_servers(count: int) -> list[Server]:
    names = [f"app-{i}-blog-dev" for i in range(count)]
    servers = [Server(n, "blog", "dev", "app", RUNNING, address(n), "m1.small", n) for n in names]
    servers += [
        Server(n, "blog", "dev", "lb", RUNNING, f"10.9.0.{2 + i}", "m1.small", n)
        for i, n in enumerate(LBS)
    ]
    return servers


@pytest.fixture
def context(settings, tmp_path, monkeypatch) -> FakeContext:
    monkeypatch.setattr(release_build, "build_release_of", fake_builder)
    record = envstore.new_record("blog", "dev", "local", 3, "m1.small").with_release("1.0.0")
    envstore.save(settings.state_dir, record)
    fake_builder(
        apps.load_manifest(settings.apps_dir, "blog"), release_build.files_dir(settings), None
    )
    ops = FakeOps([f"app-{i}-blog-dev" for i in range(3)])
    return FakeContext(settings, ops, env_servers(3))


def test_deploy_then_rollback_record_and_pillar(context, settings, tmp_path):
    source = bumped_copy(settings, tmp_path, "1.1.0")
    result = deploy.deploy(context, spec.deploy_request("blog", "dev", source=str(source)))
    assert result["release"] == "1.1.0" and result["previous_release"] == "1.0.0"
    assert len(result["switched"]) == 3
    assert set(context.salt.version.values()) == {"1.1.0"}
    record = envstore.load(settings.state_dir, "blog", "dev")
    assert (record.release, record.previous_release) == ("1.1.0", "1.0.0")
    common_file, _ = pillar.pillar_files(settings.pillar_dir, "blog", "dev")
    assert yaml.safe_load(common_file.read_text().split("\n", 1)[1])["gdl"]["version"] == "1.1.0"

    back = deploy.rollback(context, "blog", "dev")
    assert back["release"] == "1.0.0" and back["previous_release"] == "1.1.0"
    assert set(context.salt.version.values()) == {"1.0.0"}


def test_deploy_of_the_running_release_changes_nothing(context):
    result = deploy.deploy(context, spec.deploy_request("blog", "dev", version="1.0.0"))
    # The fake builder says the archive changed: every server is switched again.
    assert len(result["switched"]) == 3
    context.salt.calls.clear()
    monkey_unchanged = rolling.Roller(context.salt, rollout(3), lambda _: None)
    assert monkey_unchanged.running_version(members(3)[0]) == "1.0.0"


def test_a_failed_deploy_keeps_the_record(context, settings, tmp_path):
    source = bumped_copy(settings, tmp_path, "1.1.0")
    context.salt.unhealthy.add("1.1.0")
    with pytest.raises(rolling.DeployFailed, match="app-0-blog-dev failed"):
        deploy.deploy(context, spec.deploy_request("blog", "dev", source=str(source)))
    record = envstore.load(settings.state_dir, "blog", "dev")
    assert (record.release, record.previous_release) == ("1.0.0", None)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch": 0}, "batch=0 is out of range"),
        ({"batch": "two"}, "is not a whole number"),
        ({"version": "1 0"}, "is not a release version"),
        ({"source": " "}, "source is empty"),
    ],
)
def test_bad_arguments_change_nothing(context, settings, kwargs, message):
    with pytest.raises(InvalidRequest, match=message):
        spec.deploy_request("blog", "dev", **kwargs)
    assert context.salt.calls == []
    assert envstore.load(settings.state_dir, "blog", "dev").release == "1.0.0"


def test_unknown_environment_and_no_previous_release(context):
    with pytest.raises(NotFound, match="environment blog-qa does not exist"):
        deploy.deploy(context, spec.deploy_request("blog", "qa"))
    with pytest.raises(NotFound, match="has no previous release"):
        deploy.rollback(context, "blog", "dev")
    assert context.salt.calls == []


def test_the_app_role_runs_a_release_by_its_own_manifest(tmp_path):
    """A release built from source= brings its manifest; the states read it, not apps/'s."""
    from tests.unit.test_states_render import SALT_CALL, SECRET, LocalSalt, state_args, with_gdl

    if not SALT_CALL.exists():
        pytest.skip(f"{SALT_CALL} is not installed")
    manifest = apps.load_manifest(REPO_APPS.parent / "apps", "blog").as_dict()
    released = {**manifest, "version": "1.1.0", "wsgi": "blog.wsgi:application"}
    settings = Settings(state_dir=tmp_path / "master", source_dir=REPO_APPS.parent)
    files_dir = release_build.files_dir(settings)
    archive = release_build.release_path(files_dir, "blog", "1.1.0")
    archive.parent.mkdir(parents=True)
    archive.write_bytes(b"release")
    archive.with_name(archive.name + ".sha256").write_text(f"abc  {archive.name}\n")
    release_build.release_manifest_path(files_dir, "blog", "1.1.0").write_text(
        yaml.safe_dump(released)
    )
    built = pillar.built_releases(settings, "blog")
    salt = LocalSalt(tmp_path / "salt", with_gdl(version="1.1.0", releases=built), SECRET)
    states = salt.show_sls("app-0-blog-dev", "gdl.app")
    _, unit = state_args(states, "gdl-app-gunicorn-unit")
    assert unit["context"]["args"][-1] == "blog.wsgi:application"
    assert "GDL_APP_VERSION=1.1.0" in unit["context"]["args"]
    _, current = state_args(states, "gdl-app-current")
    assert current["target"] == "/srv/gdl/blog/releases/1.1.0"
