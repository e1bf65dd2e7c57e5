"""The states render with a sample pillar, and the files they write are valid.

``salt-call --local state.show_sls`` compiles the states without applying
them, in a configuration of its own under a temporary directory: nothing on
this machine changes.  The file templates are then rendered with the context
the states give them and checked by the daemons' own config checkers where
those are installed (read-only: ``haproxy -c``, ``keepalived -t``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.local_salt import (
    SALT_CALL,
    SAMPLE_PILLAR,
    LocalSalt,
    release_entry,
    salt_jinja,
)

REPO_ROOT = Path(__file__).resolve().parents[2]

SAMPLE = SAMPLE_PILLAR
SECRET = {"gdl": {"vrrp": {"secret": "k3epal1v"}}}

pytestmark = pytest.mark.skipif(not SALT_CALL.exists(), reason=f"{SALT_CALL} is not installed")


def merged(*parts: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merged(out[key], value)
            else:
                out[key] = value
    return out


def with_gdl(**changes: Any) -> dict[str, Any]:
    return {"gdl": {**SAMPLE["gdl"], **changes}}


def state_args(states: dict[str, Any], state_id: str) -> tuple[str, dict[str, Any]]:
    """(function, arguments) of one state in show_sls output."""
    body = states[state_id]
    for module, items in body.items():
        if module.startswith("__"):
            continue
        args: dict[str, Any] = {}
        function = ""
        for item in items:
            if isinstance(item, dict):
                args.update(item)
            else:
                function = f"{module}.{item}"
        return function, args
    raise AssertionError(f"{state_id} has no state function")


# What the second step runs: the site-packages/ tree copied into the venv, compiled there.
COPY_AND_COMPILE = (
    "import compileall, shutil, sys, sysconfig; "
    'site = sysconfig.get_path("purelib"); '
    "shutil.copytree(sys.argv[1], site, dirs_exist_ok=True); "
    "sys.exit(not compileall.compile_dir(site, quiet=1, workers=1))"
)


def venv_commands(states: dict[str, Any]) -> list[list[str]]:
    """The virtualenv's two command lines, each run without a shell (module.run cmd.run_all)."""
    commands = []
    for state_id in ("gdl-app-virtualenv-made", "gdl-app-virtualenv-installed"):
        function, args = state_args(states, state_id)
        assert function == "module.run"
        call = {k: v for item in args["cmd.run_all"] for k, v in item.items()}
        assert call["python_shell"] is False
        commands.append(call["cmd"])
    return commands


def render_file(args: dict[str, Any], pillar: dict[str, Any] | None = None) -> str:
    """Render a file.managed template the way Salt's jinja renderer would (with ``pillar``)."""
    assert args["source"].startswith("salt://")
    path = REPO_ROOT / "states" / args["source"][len("salt://") :]
    context = {"pillar": merged(SAMPLE, SECRET) if pillar is None else pillar}
    return salt_jinja().from_string(path.read_text()).render(**context, **args.get("context", {}))


@pytest.fixture(scope="module")
def local_salt(tmp_path_factory) -> LocalSalt:
    return LocalSalt(tmp_path_factory.mktemp("render"), SAMPLE, SECRET)


def test_app_role_renders_for_a_host_without_systemd(local_salt):
    states = local_salt.show_sls("app-0-blog-dev", "gdl.app")
    # The release and its hash come from pillar: archive.extracted checks the
    # archive against it, into a clean directory, once per hash.
    digest = SAMPLE["gdl"]["releases"]["1.0.0"]["sha256"]
    function, extract = state_args(states, "gdl-app-release")
    assert function == "archive.extracted"
    assert extract["name"] == "/srv/gdl/blog/releases/1.0.0"
    assert extract["source"] == "salt://gdl-releases/blog/blog-1.0.0.tar.gz"
    assert extract["source_hash"] == f"sha256={digest}"
    assert extract["clean_parent"] is True and extract["overwrite"] is True
    marker = f"/srv/gdl/blog/releases/1.0.0/.gdl-release-{digest[:16]}"
    assert extract["creates"] == marker
    assert state_args(states, "gdl-app-release-extracted")[1]["name"] == marker
    # No pip and no shell on the server: a venv without pip, then the master's
    # installed requirements copied in and compiled, each one command line.
    release = "/srv/gdl/blog/releases/1.0.0"
    complete = f"{release}/venv/.gdl-complete"
    assert venv_commands(states) == [
        ["/usr/bin/python3", "-m", "venv", "--clear", "--without-pip", f"{release}/venv"],
        [f"{release}/venv/bin/python", "-c", COPY_AND_COMPILE, f"{release}/site-packages"],
    ]
    function, marker_state = state_args(states, "gdl-app-virtualenv")
    assert (function, marker_state["name"]) == ("file.managed", complete)
    assert marker_state["replace"] is False
    assert {"module": "gdl-app-virtualenv-installed"} in marker_state["require"]
    for state_id in ("gdl-app-virtualenv-made", "gdl-app-virtualenv-installed"):
        assert state_args(states, state_id)[1]["creates"] == complete
    for state_id in ("gdl-app-gunicorn-script", "gdl-app-current"):
        assert {"file": "gdl-app-virtualenv"} in state_args(states, state_id)[1]["require"]
    function, unit = state_args(states, "gdl-app-gunicorn-unit")
    assert unit["name"] == "/etc/init.d/gdl-blog"
    # No init system: the init script is run directly, guarded by its status
    # (nothing to enable services in, and Salt's service module may be
    # systemd's offline stand-in, which does nothing).
    function, gunicorn = state_args(states, "gdl-app-gunicorn-running")
    assert (function, gunicorn["name"]) == ("cmd.run", "service gdl-blog start")
    assert gunicorn["unless"] == "service gdl-blog status"
    function, restart = state_args(states, "gdl-app-gunicorn-running-restart")
    assert restart["name"] == "service gdl-blog restart"
    assert {"file": "gdl-app-current"} in restart["onchanges"]
    _, reload = state_args(states, "gdl-app-nginx-running-reload")
    assert reload["name"] == "service nginx reload"
    _, user = state_args(states, "gdl-app-user")
    assert user["uid"] == 2400 and user["name"] != "root"
    # gdl.app includes gdl.common: a role applied alone gives a whole server.
    _, hosts = state_args(states, "gdl-common-hosts")
    assert hosts["name"] == "/etc/hosts" and "10.20.0.3\tlb-1-blog-dev\n" in hosts["content"]
    assert not [state for state in states if state.startswith("gdl-common-host-")]

    script = render_file(unit)
    assert "--startas" in script and "--pidfile" in script
    assert "blog:app" in script and "GDL_APP_VERSION=1.0.0" in script
    # The app is imported once, before gunicorn forks its workers.
    assert "--preload blog:app" in script
    check = subprocess.run(["sh", "-n"], input=script, text=True, capture_output=True)
    assert check.returncode == 0, check.stderr

    _, site = state_args(states, "gdl-app-nginx-site")
    assert site["check_cmd"] == "/usr/local/sbin/gdl-nginx-check-site"
    conf = render_file(site)
    assert "server_tokens off;" in conf
    assert 'alias "/srv/gdl/blog/current/static/";' in conf
    assert "proxy_pass http://gdl_blog;" in conf
    assert "access_log /var/log/nginx/gdl-blog.access.log;" in conf


def test_app_role_renders_for_systemd_and_for_another_app(tmp_path):
    pillar = with_gdl(
        app="hello_world",
        version="0.9.0",
        releases={"0.9.0": release_entry("hello_world", "0.9.0")},
        roles={"app": {"init": "systemd", "gunicorn": {"preload": False}}},
    )
    salt = LocalSalt(tmp_path, pillar, SECRET)
    states = salt.show_sls("app-0-hello_world-dev", "gdl.app")
    _, unit = state_args(states, "gdl-app-gunicorn-unit")
    assert unit["name"] == "/etc/systemd/system/gdl-hello_world.service"
    assert "gdl-app-systemd-reload" in states
    _, gunicorn = state_args(states, "gdl-app-gunicorn-running")
    assert gunicorn["enable"] is True
    # The pillar's version wins over the manifest's: that is a rollback.
    _, current = state_args(states, "gdl-app-current")
    assert current["target"] == "/srv/gdl/hello_world/releases/0.9.0"
    text = render_file(unit)
    assert "User=gdl" in text and "hello_world:app" in text
    # An app that must be imported in each worker turns preloading off.
    assert "--preload" not in text
    # hello_world has no static directory: nginx proxies everything.
    assert "location /static/" not in render_file(state_args(states, "gdl-app-nginx-site")[1])


def test_a_release_that_does_not_fit_is_refused_before_it_is_unpacked(tmp_path):
    """The space is read where the release goes; a release that fits adds no state."""
    base = tmp_path / "srv"
    (base / "blog" / "releases").mkdir(parents=True)
    huge = {**release_entry("blog", "1.0.0"), "room": 1 << 50}
    pillar = with_gdl(releases={"1.0.0": huge}, roles={"app": {"base_dir": str(base)}})
    states = LocalSalt(tmp_path / "short", pillar, SECRET).show_sls("app-0-blog-dev", "gdl.app")
    function, room = state_args(states, "gdl-app-release-room")
    assert function == "test.fail_without_changes"
    free = shutil.disk_usage(base).free / (1 << 20)
    assert room["comment"].startswith(f"{base}/blog/releases has ")
    assert f"release 1.0.0 needs about {float(1 << 30)} MiB: free space on" in room["comment"]
    assert abs(float(room["comment"].split()[2]) - free) < 64  # MiB, as the disk moves
    assert {"test": "gdl-app-release-room"} in state_args(states, "gdl-app-release")[1]["require"]

    fits = {**release_entry("blog", "1.0.0"), "room": 1}
    pillar = with_gdl(releases={"1.0.0": fits}, roles={"app": {"base_dir": str(base)}})
    states = LocalSalt(tmp_path / "fits", pillar, SECRET).show_sls("app-0-blog-dev", "gdl.app")
    assert "gdl-app-release-room" not in states


def test_lb_role_renders_and_its_configs_pass_their_checkers(local_salt):
    states = local_salt.show_sls("lb-0-blog-dev", "gdl.lb")
    assert "gdl-common-packages" in states  # gdl.lb includes gdl.common
    _, haproxy_args = state_args(states, "gdl-lb-haproxy-config")
    assert haproxy_args["check_cmd"].startswith("/usr/sbin/haproxy -c")
    haproxy_cfg = render_file(haproxy_args)
    assert "balance roundrobin" in haproxy_cfg
    assert "server app-0-blog-dev 10.20.0.11:80" in haproxy_cfg
    assert "server app-1-blog-dev 10.20.0.12:80" in haproxy_cfg
    assert "uri /healthz" in haproxy_cfg
    assert "observe layer7 error-limit 1 on-error mark-down" in haproxy_cfg
    assert "option redispatch" in haproxy_cfg
    assert "stats socket /run/haproxy/admin.sock mode 600 level admin" in haproxy_cfg
    assert "k3epal1v" not in haproxy_cfg

    # keepalived's Debian init script has no `status`: its pidfile is asked instead.
    _, keepalived_running = state_args(states, "gdl-lb-keepalived-running")
    assert keepalived_running["unless"].startswith("start-stop-daemon --status")
    assert {"cmd": "gdl-lb-haproxy-running"} in keepalived_running["require"]

    _, keepalived_args = state_args(states, "gdl-lb-keepalived-config")
    assert keepalived_args["show_changes"] is False
    assert keepalived_args["mode"] == "0600"
    keepalived_conf = render_file(keepalived_args)
    assert "vrrp_instance VI_blog_dev {" in keepalived_conf
    assert "virtual_router_id 42" in keepalived_conf
    assert "priority 250" in keepalived_conf
    assert "unicast_src_ip 10.20.0.2" in keepalived_conf
    assert "10.20.0.3" in keepalived_conf  # the peer
    assert "auth_pass k3epal1v" in keepalived_conf
    assert "10.20.0.10/32 dev eth0" in keepalived_conf
    assert "nopreempt" in keepalived_conf

    for binary, args, text in (
        ("haproxy", ["-c", "-q", "-f"], haproxy_cfg),
        ("keepalived", ["--config-test", "-f"], with_scripts(keepalived_conf, local_salt.root)),
    ):
        executable = shutil.which(binary) or f"/usr/sbin/{binary}"
        if not Path(executable).exists():
            continue
        config = local_salt.root / f"check-{binary}.conf"
        config.write_text(text)
        done = subprocess.run([executable, *args, str(config)], capture_output=True, text=True)
        assert done.returncode == 0, f"{binary}: {done.stdout}{done.stderr}"


def haproxy_section(cfg: str, header: str) -> list[str]:
    """The stripped lines of one section of haproxy.cfg, comments left out."""
    lines = cfg.splitlines()
    start = lines.index(header)
    section = []
    for line in lines[start + 1 :]:
        if line and not line.startswith(" "):
            break
        if line.strip() and not line.strip().startswith("#"):
            section.append(line.strip())
    return section


def test_metrics_and_stats_are_served_on_the_lbs_own_address_only(local_salt):
    states = local_salt.show_sls("lb-1-blog-dev", "gdl.lb")
    haproxy_cfg = render_file(state_args(states, "gdl-lb-haproxy-config")[1])
    stats = haproxy_section(haproxy_cfg, "frontend stats")
    # lb-1's own address (pillar gdl:lbs), the default port; never the VIP nor every address.
    assert [line for line in stats if line.startswith("bind ")] == ["bind 10.20.0.3:8404"]
    assert "10.20.0.10" not in "\n".join(stats)
    assert "http-request use-service prometheus-exporter if { path /metrics }" in stats
    assert "stats uri /stats" in stats
    # Read-only: the page can change nothing in haproxy.
    assert not [line for line in stats if line.startswith("stats admin")]
    assert "8404" not in "\n".join(haproxy_section(haproxy_cfg, "frontend fe_blog_dev"))


def test_metrics_port_follows_the_pillar(tmp_path):
    roles = {"lb": {"haproxy": {"metrics_port": 9101}}}
    salt = LocalSalt(tmp_path, with_gdl(roles=roles), SECRET)
    states = salt.show_sls("lb-0-blog-dev", "gdl.lb")
    haproxy_cfg = render_file(state_args(states, "gdl-lb-haproxy-config")[1])
    assert "bind 10.20.0.2:9101" in haproxy_section(haproxy_cfg, "frontend stats")


def with_scripts(conf: str, root: Path) -> str:
    """keepalived.conf naming stand-ins in ``root`` for the role's scripts in /etc/keepalived.

    keepalived's config test disables a check whose script is missing, and fails.
    """
    for script in ("gdl-check-haproxy", "gdl-vip-master"):
        (root / script).write_text("#!/bin/sh\n")
        (root / script).chmod(0o700)
    return conf.replace("/etc/keepalived/", f"{root}/")


def test_second_lb_finds_its_interface_from_its_address(tmp_path):
    # 127.0.0.1 is on `lo` on every machine: the interface comes from grains.
    lbs = [
        {"name": "lb-0-blog-dev", "address": "10.20.0.2"},
        {"name": "lb-1-blog-dev", "address": "127.0.0.1"},
    ]
    vrrp = {key: value for key, value in SAMPLE["gdl"]["vrrp"].items() if key != "interface"}
    salt = LocalSalt(tmp_path, with_gdl(lbs=lbs, vrrp={**vrrp, "router_id": 7}), SECRET)
    states = salt.show_sls("lb-1-blog-dev", "gdl.lb")
    conf = render_file(state_args(states, "gdl-lb-keepalived-config")[1])
    assert "interface lo" in conf
    assert "priority 240" in conf
    assert "unicast_src_ip 127.0.0.1" in conf
    assert "virtual_router_id 7" in conf


def test_clean_states_render(local_salt):
    app = local_salt.show_sls("app-0-blog-dev", "gdl.app.clean,gdl.common.clean")
    function, stop = state_args(app, "gdl-app-gunicorn-dead")
    assert (function, stop["name"]) == ("cmd.run", "service gdl-blog stop")
    lb = local_salt.show_sls("lb-0-blog-dev", "gdl.lb.clean")
    assert state_args(lb, "gdl-lb-keepalived-dead")[1]["name"] == "service keepalived stop"
    _, files = state_args(lb, "gdl-lb-clean-files")
    assert files["require"] == [{"cmd": "gdl-lb-keepalived-dead"}]


def test_missing_release_fails_with_a_clear_message(tmp_path):
    salt = LocalSalt(tmp_path, with_gdl(version="7.0.0"), SECRET)
    done = salt.call("app-0-blog-dev", "state.show_sls", "gdl.app")
    assert done.returncode != 0
    assert "release blog 7.0.0 is not on the master" in done.stdout + done.stderr


def test_missing_pillar_fails_with_a_clear_message(tmp_path):
    salt = LocalSalt(tmp_path, with_gdl(vip=""), SECRET)
    done = salt.call("lb-0-blog-dev", "state.show_sls", "gdl.lb")
    assert done.returncode != 0
    assert "pillar gdl:vip is empty" in done.stdout + done.stderr


def test_lb_not_in_the_pillar_is_refused(local_salt):
    done = local_salt.call("lb-5-blog-dev", "state.show_sls", "gdl.lb")
    assert done.returncode != 0
    assert "is not in pillar gdl:lbs" in done.stdout + done.stderr


def test_top_files_give_each_role_its_states_and_the_secret_to_lbs_only(local_salt):
    done = local_salt.call("lb-1-blog-dev", "state.show_top")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["local"]["base"] == ["gdl.lb"]
    done = local_salt.call("app-1-blog-dev", "state.show_top")
    assert json.loads(done.stdout)["local"]["base"] == ["gdl.app"]

    # Values are masked in pillar output; the keys say enough.
    def vrrp_keys(minion_id: str) -> list[str]:
        done = local_salt.call(minion_id, "pillar.get", "gdl:vrrp")
        assert done.returncode == 0, done.stderr
        return sorted(json.loads(done.stdout)["local"])

    common = sorted(SAMPLE["gdl"]["vrrp"])
    assert vrrp_keys("lb-0-blog-dev") == sorted([*common, "secret"])
    assert vrrp_keys("app-0-blog-dev") == common
    # Another environment's server gets none of it.
    done = local_salt.call("app-0-blog-qa", "pillar.get", "gdl")
    assert json.loads(done.stdout)["local"] in ("", {}, None)


def pillar_keys(data: Any, prefix: str = "") -> set[str]:
    """Every key path of a pillar, ``a:b:c``; a release's version reads as ``*``."""
    if not isinstance(data, dict):
        return set()
    found = set()
    for key, value in data.items():
        name = "*" if prefix == "releases:" else str(key)
        found.add(prefix + name)
        found |= pillar_keys(value, f"{prefix}{name}:")
    return found


def test_pillar_example_is_true_and_complete():
    """pillar.example documents every default and every key the runner writes, and no other."""
    from gdl import pillar, spec
    from gdl.envstore import new_record
    from gdl.providers.base import RUNNING, EnvNetwork, Server

    example = yaml.safe_load((REPO_ROOT / "pillar" / "pillar.example").read_text())["gdl"]
    documented = pillar_keys(example)
    defaults = yaml.safe_load(
        (REPO_ROOT / "states" / "gdl" / "parameters" / "defaults.yaml").read_text()
    )["gdl"]
    record = new_record("blog", "dev", "local", 1, "m1.small").with_release("1.0.0")
    network = EnvNetwork("10.20.0.10", "10.20.0.10", "10.20.0.0/24", 42, "10.20.0.1")
    server = Server("app-0-blog-dev", "blog", "dev", "app", RUNNING, "10.20.0.11", "m1", "x")
    common, lb_only = pillar.env_pillar(
        record, network, [server], [server.name], {"1.0.0": release_entry("blog", "1.0.0")}
    )
    written = pillar_keys(merged(common, lb_only)["gdl"])
    known = pillar_keys(defaults) | written
    assert not pillar_keys(defaults) - documented, "pillar.example lacks defaults"
    assert not written - documented, f"pillar.example lacks {sorted(written - documented)}"
    assert not documented - known, f"nothing reads {sorted(documented - known)}"
    # The example's VRRP timings are the default profile's, as the runner writes them.
    assert {k: example["vrrp"][k] for k in spec.VRRP_PROFILES["default"]} == (
        spec.VRRP_PROFILES["default"]
    )
    assert merged(SAMPLE, SECRET)["gdl"]["vrrp"]["secret"] == "k3epal1v"


def keepalived_conf_for(
    tmp_path: Path, profile: str, overrides: dict[str, Any] | None = None
) -> tuple[str, Path]:
    """keepalived.conf of lb-0 rendered with the VRRP settings the runner writes for ``profile``."""
    from gdl import spec

    vrrp = {**SAMPLE["gdl"]["vrrp"], **spec.vrrp_settings(profile, overrides)}
    salt = LocalSalt(tmp_path, with_gdl(vrrp=vrrp), SECRET)
    states = salt.show_sls("lb-0-blog-dev", "gdl.lb")
    return render_file(state_args(states, "gdl-lb-keepalived-config")[1]), tmp_path


def assert_keepalived_accepts(conf: str, root: Path) -> None:
    """keepalived's own check, in a network namespace of its own holding eth0."""
    if not Path("/usr/sbin/keepalived").exists() or not shutil.which("unshare"):
        return
    config = root / "check-keepalived.conf"
    config.write_text(conf)
    script = (
        "ip link add eth0 type veth peer name eth1 && ip link set eth0 up && "
        f"ip addr add 10.20.0.2/24 dev eth0 && /usr/sbin/keepalived --config-test -f {config}"
    )
    done = subprocess.run(["unshare", "-n", "sh", "-c", script], capture_output=True, text=True)
    if "Operation not permitted" in done.stderr:
        return  # no privilege for a namespace here: the render checks above stand
    assert done.returncode == 0, done.stdout + done.stderr


def test_default_vrrp_profile_is_vrrp2_with_the_secret(tmp_path):
    conf, root = keepalived_conf_for(tmp_path, "default")
    assert "version 2" in conf
    assert "advert_int 1\n" in conf
    assert "auth_pass k3epal1v" in conf
    assert "check_unicast_src" in conf
    assert "interval 1\n    timeout 3\n    fall 1\n    rise 2" in conf
    assert "garp_master_delay 1" in conf
    assert "garp_master_repeat 3" in conf
    assert "state BACKUP" in conf and "nopreempt" in conf
    assert_keepalived_accepts(with_scripts(conf, root), root)


def test_fast_vrrp_profile_is_vrrp3_sub_second_without_pass(tmp_path):
    conf, root = keepalived_conf_for(tmp_path, "fast")
    assert "version 3" in conf
    assert "advert_int 0.25" in conf
    # keepalived refuses PASS authentication with VRRPv3; the peer check stays.
    assert "auth_type" not in conf and "k3epal1v" not in conf
    assert "check_unicast_src" in conf
    assert "unicast_peer {\n        10.20.0.3" in conf
    assert "interval 1\n    timeout 3\n    fall 1\n    rise 2" in conf
    assert "state BACKUP" in conf and "nopreempt" in conf
    assert_keepalived_accepts(with_scripts(conf, root), root)


def test_a_knob_replaces_the_profile_value(tmp_path):
    conf, _ = keepalived_conf_for(tmp_path, "fast", {"advert_int": 0.5, "check_fall": 3})
    assert "advert_int 0.5" in conf
    assert "fall 3" in conf
    assert "version 3" in conf


@pytest.mark.parametrize(
    ("profile", "overrides", "message"),
    [
        ("turbo", {}, "pillar gdl:vrrp:profile is turbo: use one of default, fast"),
        ("default", {"advert_int": 0.5}, "VRRPv2 takes whole seconds"),
        ("fast", {"advert_int": 0.005}, "VRRPv3 takes 0.01 to 40.95 seconds"),
        ("default", {"version": 4}, "pillar gdl:vrrp:version is 4: use 2 or 3"),
        (
            "default",
            {"check_interval": 0.5},
            "pillar gdl:vrrp:check_interval is 0.5: give a whole number",
        ),
        ("default", {"check_fall": "two"}, "pillar gdl:vrrp:check_fall is two: give a number"),
    ],
)
def test_bad_vrrp_settings_are_refused_in_one_line(profile, overrides, message):
    """The runner checks the VRRP settings before it writes them; the role renders them as given."""
    from gdl import spec
    from gdl.errors import InvalidRequest

    with pytest.raises(InvalidRequest) as refused:
        spec.vrrp_settings(profile, overrides)
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_a_release_of_an_older_gdl_is_installed_by_pip_without_a_shell(tmp_path):
    """Its archive carries wheels (layout wheelhouse, read by the master): pip installs them."""
    # The runner refuses such manifest values; no shell reads them all the same.
    entry = {
        **release_entry("blog", "1.0.0"),
        "layout": "wheelhouse",
        "requirements": "reqs; touch /tmp/owned.txt",
    }
    salt = LocalSalt(tmp_path, with_gdl(releases={"1.0.0": entry}), SECRET)
    states = salt.show_sls("app-0-blog-dev", "gdl.app")
    release = "/srv/gdl/blog/releases/1.0.0"
    make, install = venv_commands(states)
    assert make == ["/usr/bin/python3", "-m", "venv", "--clear", f"{release}/venv"]
    assert install[:2] == [f"{release}/venv/bin/pip", "install"]
    assert install[install.index("--find-links") + 1] == f"{release}/wheelhouse"
    # One argument of pip's, whatever it holds.
    assert install[-2:] == ["--requirement", f"{release}/reqs; touch /tmp/owned.txt"]


def test_values_reaching_the_init_script_are_quoted(tmp_path):
    salt = LocalSalt(tmp_path, SAMPLE, SECRET)
    states = salt.show_sls("app-0-blog-dev", "gdl.app")
    _, unit = state_args(states, "gdl-app-gunicorn-unit")
    args = [*unit["context"]["args"][:-1], "blog:app $(id)"]
    script = render_file({**unit, "context": {**unit["context"], "args": args}})
    assert "'blog:app $(id)'" in script


def test_the_vrrp_secret_is_not_in_the_states_render_context(local_salt):
    # state.show_sls and the job cache show a state's arguments: keepalived's
    # template reads the secret from pillar itself.
    states = local_salt.show_sls("lb-0-blog-dev", "gdl.lb")
    assert "k3epal1v" not in json.dumps(states)
    _, keepalived = state_args(states, "gdl-lb-keepalived-config")
    assert "auth_pass k3epal1v" in render_file(keepalived)


@pytest.mark.parametrize(
    ("minion", "role"), [("lb-0-blog-dev", "gdl.lb"), ("app-0-blog-dev", "gdl.app")]
)
def test_no_state_is_given_the_gdl_pillar_or_a_secret_as_its_context(local_salt, minion, role):
    # A template's context is a state argument, shown by state.show_sls and kept in
    # the job cache: each state is given the parts its template needs, never the whole
    # gdl pillar, and templates read secrets from pillar themselves.
    states = local_salt.show_sls(minion, role)
    contexts = [
        state_args(states, state_id)[1].get("context") or {}
        for state_id in states
        if not state_id.startswith("__")
    ]
    given = [context["gdl"] for context in contexts if "gdl" in context]
    assert all(set(part) < set(SAMPLE["gdl"]) for part in given), given

    def keys(value: Any) -> set[str]:
        if isinstance(value, dict):
            return set(value) | {k for v in value.values() for k in keys(v)}
        if isinstance(value, list):
            return {k for v in value for k in keys(v)}
        return set()

    assert not keys(contexts) & {"secret", "pem", "key", "tls_key"}


def https_pillar(tmp_path: Path, http: str = "redirect") -> dict[str, Any]:
    """gdl:tls as the runner writes it for a tls=auto environment."""
    from gdl import envstore, tls

    record = tls.applied(
        envstore.new_record("blog", "dev", "local", 2, "m1.small"),
        tls.TlsRequest("auto", http=http),
    )
    return tls.lb_pillar(tmp_path / "state", record, ["10.20.0.10"])


def test_lb_role_serves_https_with_the_certificate_root_only(tmp_path):
    https = https_pillar(tmp_path)
    salt = LocalSalt(tmp_path / "salt", SAMPLE, merged(SECRET, {"gdl": {"tls": https}}))
    states = salt.show_sls("lb-0-blog-dev", "gdl.lb")
    function, pem = state_args(states, "gdl-lb-tls-pem")
    assert function == "file.managed"
    assert (pem["name"], pem["mode"], pem["user"]) == ("/etc/haproxy/gdl-tls.pem", "0600", "root")
    assert pem["show_changes"] is False
    # The key comes from the pillar when the state runs, never in the state's data.
    assert pem["contents_pillar"] == "gdl:tls:pem"
    assert "PRIVATE KEY" not in json.dumps(states)
    assert {"file": "gdl-lb-haproxy-config"} in pem["require_in"]
    _, reload = state_args(states, "gdl-lb-haproxy-running-reload")
    assert {"file": "gdl-lb-tls-pem"} in reload["onchanges"]

    _, haproxy_args = state_args(states, "gdl-lb-haproxy-config")
    haproxy_cfg = render_file(haproxy_args)
    assert "bind :80\n" in haproxy_cfg
    assert "bind :443 ssl crt /etc/haproxy/gdl-tls.pem alpn h2,http/1.1" in haproxy_cfg
    assert "ssl-default-bind-options ssl-min-ver TLSv1.2 no-tls-tickets" in haproxy_cfg
    assert "ssl-default-bind-ciphers ECDHE-ECDSA-AES128-GCM-SHA256:" in haproxy_cfg
    assert "ssl-default-bind-ciphersuites" not in haproxy_cfg  # TLS 1.3: OpenSSL's suites
    assert "http-request redirect scheme https code 301 unless { ssl_fc }" in haproxy_cfg
    assert "X-Forwarded-Proto https if { ssl_fc }" in haproxy_cfg

    executable = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if Path(executable).exists():
        pem_file = tmp_path / "gdl-tls.pem"
        pem_file.write_text(https["pem"])
        config = tmp_path / "check-haproxy.conf"
        config.write_text(haproxy_cfg.replace("/etc/haproxy/gdl-tls.pem", str(pem_file)))
        done = subprocess.run([executable, "-c", "-f", str(config)], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "ALERT" not in done.stdout + done.stderr


def test_lb_role_with_http_allowed_serves_both(tmp_path):
    https = https_pillar(tmp_path, http="allow")
    salt = LocalSalt(tmp_path / "salt", SAMPLE, merged(SECRET, {"gdl": {"tls": https}}))
    states = salt.show_sls("lb-0-blog-dev", "gdl.lb")
    haproxy_cfg = render_file(state_args(states, "gdl-lb-haproxy-config")[1])
    assert "bind :443 ssl" in haproxy_cfg
    assert "redirect" not in haproxy_cfg


def test_lb_role_without_tls_serves_http_only_and_removes_the_certificate(local_salt):
    states = local_salt.show_sls("lb-0-blog-dev", "gdl.lb")
    function, pem = state_args(states, "gdl-lb-tls-pem")
    assert (function, pem["name"]) == ("file.absent", "/etc/haproxy/gdl-tls.pem")
    # Removed once haproxy.cfg no longer names it.
    assert {"file": "gdl-lb-haproxy-config"} in pem["require"]
    haproxy_cfg = render_file(state_args(states, "gdl-lb-haproxy-config")[1])
    assert ":443" not in haproxy_cfg and "ssl" not in haproxy_cfg
    clean = local_salt.show_sls("lb-0-blog-dev", "gdl.lb.clean")
    assert state_args(clean, "gdl-lb-clean-tls")[1]["name"] == "/etc/haproxy/gdl-tls.pem"


def test_lb_role_refuses_tls_without_a_certificate(tmp_path):
    tls_on = {"gdl": {"tls": {"enabled": True, "http": "redirect", "pem": ""}}}
    salt = LocalSalt(tmp_path, SAMPLE, merged(SECRET, tls_on))
    done = salt.call("lb-0-blog-dev", "state.show_sls", "gdl.lb")
    assert done.returncode != 0
    assert "gdl:tls:pem is empty" in done.stdout + done.stderr


@pytest.mark.parametrize("profile", ["default", "fast"])
def test_haproxy_death_is_tracked_at_once_and_a_new_master_tells_the_salt_master(tmp_path, profile):
    conf, root = keepalived_conf_for(tmp_path, profile)
    # This machine is in the initial PID namespace: keepalived hears process events here.
    assert "vrrp_track_process haproxy_running {\n    process haproxy" in conf
    assert "track_process {\n        haproxy_running weight 0\n    }" in conf
    # The check script waits for haproxy's end most of each second; keepalived gives it room.
    assert 'script "/etc/keepalived/gdl-check-haproxy 0.8"' in conf
    assert "notify_master /etc/keepalived/gdl-vip-master" in conf
    assert_keepalived_accepts(with_scripts(conf, root), root)


def test_keepalived_scripts_are_root_only_and_the_event_names_the_holder(local_salt):
    states = local_salt.show_sls("lb-1-blog-dev", "gdl.lb")
    _, check = state_args(states, "gdl-lb-keepalived-check-haproxy")
    _, notify = state_args(states, "gdl-lb-keepalived-vip-master")
    _, keepalived = state_args(states, "gdl-lb-keepalived-config")
    assert {"file": "gdl-lb-keepalived-check-haproxy"} in keepalived["require"]
    assert {"file": "gdl-lb-keepalived-vip-master"} in keepalived["require"]
    for args in (check, notify):
        assert (args["user"], args["group"], args["mode"]) == ("root", "root", "0700")
    script = render_file(notify)
    assert "event.send 'gdl/vip/blog-dev/master'" in script
    assert '"holder": "lb-1-blog-dev"' in script and '"vip": "10.20.0.10"' in script
    assert script.rstrip().endswith("&")  # keepalived does not wait for the master
    salt_call = notify["context"]["lb"]["salt_call"]
    assert salt_call.endswith("salt-call") and Path(salt_call).exists(), salt_call
    done = subprocess.run(["sh", "-n"], input=script, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    check_path = REPO_ROOT / "states" / check["source"][len("salt://") :]
    assert subprocess.run(["sh", "-n", str(check_path)]).returncode == 0


def test_the_check_script_answers_whether_haproxy_runs_and_wakes_when_it_ends(tmp_path):
    """gdl-check-haproxy with a stand-in process named haproxy, in this PID namespace."""
    if not shutil.which("pidwait"):
        pytest.skip("pidwait is not installed")
    check = REPO_ROOT / "states" / "gdl" / "lb" / "files" / "gdl-check-haproxy"
    fake = tmp_path / "haproxy"
    fake.symlink_to(shutil.which("sleep"))
    # Only if no real haproxy runs here: the script asks about every process named haproxy.
    if subprocess.run(["pgrep", "-x", "haproxy"], capture_output=True).returncode == 0:
        pytest.skip("a haproxy runs on this machine")
    assert subprocess.run(["sh", str(check), "0.1"]).returncode == 1
    stand_in = subprocess.Popen([str(fake), "30"])
    try:
        assert subprocess.run(["sh", str(check), "0.2"]).returncode == 0
        waiting = subprocess.Popen(["sh", str(check), "20"])
        stand_in.kill()
        stand_in.wait()
        # It ends as soon as the process does, not when its window closes.
        assert waiting.wait(timeout=10) == 1
    finally:
        stand_in.kill()
        stand_in.wait()


def test_the_check_script_still_answers_where_procps_has_no_pidwait(tmp_path):
    """Ubuntu 22.04's procps has no pidwait: the script then answers at once, by pgrep alone."""
    check = REPO_ROOT / "states" / "gdl" / "lb" / "files" / "gdl-check-haproxy"
    if subprocess.run(["pgrep", "-x", "haproxy"], capture_output=True).returncode == 0:
        pytest.skip("a haproxy runs on this machine")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sh", "timeout", "pgrep"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    fake = tmp_path / "haproxy"
    fake.symlink_to(shutil.which("sleep"))
    env = {"PATH": str(bin_dir)}
    assert subprocess.run([str(bin_dir / "sh"), str(check), "5"], env=env).returncode == 1
    stand_in = subprocess.Popen([str(fake), "30"])
    try:
        # No pidwait to wait on: it answers now, not when the 600 s window closes.
        answer = subprocess.run([str(bin_dir / "sh"), str(check), "600"], env=env, timeout=60)
        assert answer.returncode == 0
    finally:
        stand_in.kill()
        stand_in.wait()


def test_sticky_and_the_health_check_tuning_reach_haproxy_cfg(tmp_path):
    from gdl import tuning

    haproxy = tuning.haproxy_settings(
        {"sticky": True, "health_interval": 0.25, "health_fall": 3, "timeout_server": 90}
    )
    salt = LocalSalt(tmp_path, with_gdl(roles={"lb": {"haproxy": haproxy}}), SECRET)
    args = state_args(salt.show_sls("lb-0-blog-dev", "gdl.lb"), "gdl-lb-haproxy-config")[1]
    cfg = render_file(args)
    assert "cookie GDLSERVER insert indirect nocache httponly" in cfg
    assert "server app-0-blog-dev 10.20.0.11:80 cookie app-0-blog-dev" in cfg
    assert "default-server check inter 250ms fall 3 rise 2 " in cfg
    assert "timeout server 90s" in cfg
    executable = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if Path(executable).exists():
        (tmp_path / "haproxy.cfg").write_text(cfg)
        done = subprocess.run(
            [executable, "-c", "-q", "-f", str(tmp_path / "haproxy.cfg")],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_without_tuning_haproxy_cfg_is_round_robin_without_a_cookie(local_salt):
    args = state_args(local_salt.show_sls("lb-0-blog-dev", "gdl.lb"), "gdl-lb-haproxy-config")[1]
    cfg = render_file(args)
    assert "cookie" not in cfg
    assert "default-server check inter 500ms fall 2 rise 2 " in cfg


def test_lb_role_drops_vrrp_from_all_but_its_peer(local_salt):
    """keepalived's VRRPv3 has no authentication: the kernel keeps VRRP to the peer's address."""
    states = local_salt.show_sls("lb-0-blog-dev", "gdl.lb")
    _, vrrp_filter = state_args(states, "gdl-lb-vrrp-filter")
    restore = vrrp_filter["stdin"]
    assert "-A gdl-vrrp -s 10.20.0.3/32 -j RETURN\n-A gdl-vrrp -j DROP\nCOMMIT" in restore
    assert "10.20.0.2" not in restore  # this LB's own address is no peer
    _, keepalived_args = state_args(states, "gdl-lb-keepalived-config")
    assert {"cmd": "gdl-lb-vrrp-filter"} in keepalived_args["require"]
    cleaned = local_salt.show_sls("lb-0-blog-dev", "gdl.lb.clean")
    _, removal = state_args(cleaned, "gdl-lb-clean-vrrp-filter")
    if os.geteuid() != 0 or not shutil.which("iptables"):
        return
    # The commands themselves, in a network namespace of their own: made once, then
    # nothing to do; a new peer replaces the old; the role's removal leaves nothing.
    netns = f"gdlvrrp{os.getpid()}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:

        def run(command: str, stdin: str | None = None) -> int:
            argv = ["ip", "netns", "exec", netns, "sh", "-c", command]
            return subprocess.run(argv, input=stdin, text=True, capture_output=True).returncode

        assert run(vrrp_filter["unless"]) != 0
        assert run(vrrp_filter["name"], restore) == 0
        assert run(vrrp_filter["unless"]) == 0
        moved = restore.replace("10.20.0.3/32", "10.20.0.9/32")
        assert run(vrrp_filter["name"], moved) == 0
        assert run(vrrp_filter["unless"]) != 0  # the old peer's rule is gone
        assert run(vrrp_filter["unless"].replace("10.20.0.3/32", "10.20.0.9/32")) == 0
        assert run("iptables -w -S INPUT | grep -c gdl-vrrp | grep -qx 1") == 0
        assert run(removal["onlyif"]) == 0
        assert run(removal["name"]) == 0
        assert run(removal["onlyif"]) != 0
        assert run("iptables -w -S | grep -q gdl-vrrp") != 0
    finally:
        subprocess.run(["ip", "netns", "del", netns], check=False)
