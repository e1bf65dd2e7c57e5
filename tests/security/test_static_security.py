"""Security properties that the product's files state, checked without daemons.

What bootstrap.sh writes into the master's configuration, what the roles'
templates tell nginx, haproxy, keepalived and gunicorn, and how the master keeps
an environment's secret.  The integration tests next to this file check the
same properties on a running environment.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from gdl import envstore, keys
from gdl import pillar as env_pillar
from gdl.providers.base import EnvNetwork, Server

REPO_ROOT = Path(__file__).resolve().parents[2]
BOOTSTRAP = REPO_ROOT / "bootstrap.sh"
STATES = REPO_ROOT / "states" / "gdl"


def _master_config_template() -> str:
    """The master.d/gdl.conf heredoc bootstrap.sh writes."""
    text = BOOTSTRAP.read_text()
    match = re.search(r'write_file "\$GDL_CONF" 0644 <<EOF\n(.*?)\nEOF\n', text, re.DOTALL)
    assert match, "bootstrap.sh no longer writes $GDL_CONF from a heredoc"
    return match.group(1)


def test_bootstrap_master_config_never_accepts_keys_by_itself() -> None:
    config = _master_config_template()
    assert re.search(r"^auto_accept: False$", config, re.MULTILINE)
    assert re.search(r"^open_mode: False$", config, re.MULTILINE)
    for risky in ("autosign_file", "autosign_grains_dir", "autoreject_file", "permissive_pki"):
        assert risky not in config, risky
    assert re.search(r"^interface: \$interface$", config, re.MULTILINE)


def test_bootstrap_never_lets_the_master_listen_everywhere() -> None:
    text = BOOTSTRAP.read_text()
    assignments = re.findall(r"^\s*interface=(\S+)", text, re.MULTILINE)
    assert assignments, "bootstrap.sh sets the master's interface nowhere"
    assert all("0.0.0.0" not in value for value in assignments), assignments


@pytest.mark.skipif(os.geteuid() != 0, reason="bootstrap.sh's checks are those a root run makes")
@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--provider", "openstack", "--cloud", "c"], "needs --master-address"),
        (
            ["--provider", "openstack", "--cloud", "c", "--master-address", "0.0.0.0"],
            "listens on every network",
        ),
    ],
    ids=["openstack-without-address", "openstack-any-address"],
)
def test_bootstrap_refuses_a_master_on_every_address(
    tmp_path: Path, args: list[str], fragment: str
) -> None:
    environment = {k: v for k, v in os.environ.items() if k != "OS_CLOUD"}
    environment["GDL_OS_RELEASE"] = str(tmp_path / "no-os-release")
    done = subprocess.run(
        ["bash", str(BOOTSTRAP), *args], capture_output=True, text=True, env=environment
    )
    assert done.returncode != 0
    assert fragment in done.stderr and len(done.stderr.splitlines()) == 1, done.stderr


def test_openstack_salt_cloud_provider_file_is_root_only() -> None:
    # It names the cloud; credentials stay in clouds.yaml, but the file is root's alone.
    text = BOOTSTRAP.read_text()
    assert 'write_file "$CLOUD_PROVIDERS_CONF" 0600 <<EOF' in text


def test_nginx_hides_its_version() -> None:
    site = (STATES / "app" / "files" / "nginx-site.conf.jinja").read_text()
    assert re.search(r"^\s*server_tokens off;$", site, re.MULTILINE)


def test_gunicorn_runs_as_the_roles_unprivileged_user() -> None:
    defaults = yaml.safe_load((STATES / "parameters" / "defaults.yaml").read_text())
    role = defaults["gdl"]["roles"]["app"]
    assert role["user"] not in ("root", "") and role["uid"] >= 1000 and role["gid"] >= 1000
    unit = (STATES / "app" / "files" / "gunicorn.service.jinja").read_text()
    assert re.search(r"^User=\{\{ user \}\}$", unit, re.MULTILINE)
    init = (STATES / "app" / "files" / "gunicorn.init.jinja").read_text()
    assert "--chuid" in init or "setpriv" in init


def test_haproxy_runtime_socket_is_root_only() -> None:
    cfg = (STATES / "lb" / "files" / "haproxy.cfg.jinja").read_text()
    (line,) = [line for line in cfg.splitlines() if line.strip().startswith("stats socket")]
    assert "mode 600" in line
    assert re.search(r"^\s*user haproxy$", cfg, re.MULTILINE)  # workers drop root
    defaults = yaml.safe_load((STATES / "parameters" / "defaults.yaml").read_text())
    assert defaults["gdl"]["roles"]["lb"]["haproxy"]["socket"].startswith("/run/haproxy/")


def test_keepalived_runs_only_root_owned_scripts_and_authenticates() -> None:
    conf = (STATES / "lb" / "files" / "keepalived.conf.jinja").read_text()
    assert re.search(r"^\s*enable_script_security$", conf, re.MULTILINE)
    assert "auth_type PASS" in conf and "auth_pass {{" in conf
    states = (STATES / "lb" / "config.sls").read_text()
    keepalived_state = states.split("gdl-lb-keepalived-config:")[1]
    assert "- mode: '0600'" in keepalived_state
    assert "- show_changes: false" in keepalived_state


def test_config_states_check_before_they_install() -> None:
    for role, state_id in (
        ("app", "gdl-app-nginx-site"),
        ("lb", "gdl-lb-haproxy-config"),
        ("lb", "gdl-lb-keepalived-config"),
    ):
        text = (STATES / role / "config.sls").read_text()
        block = text.split(f"{state_id}:")[1].split("\n\n")[0]
        assert "- check_cmd:" in block, state_id


def test_vrrp_secret_is_random_per_environment_and_root_only(tmp_path: Path) -> None:
    records = [envstore.new_record("blog", env, "local", 2, "m1.small") for env in ("a", "b")]
    secrets = {record.vrrp_secret for record in records} | {
        envstore.new_vrrp_secret() for _ in range(20)
    }
    assert len(secrets) == 22  # 32 random bits each: no two alike
    assert all(re.fullmatch(r"[0-9a-f]{8}", s) for s in secrets)
    path = envstore.save(tmp_path / "state", records[0])
    assert path.stat().st_mode & 0o077 == 0
    assert path.parent.stat().st_mode & 0o077 == 0


def test_vrrp_secret_is_in_the_load_balancers_pillar_file_only(tmp_path: Path) -> None:
    record = envstore.new_record("blog", "dev", "local", 1, "m1.small")
    servers = [
        Server(
            name=name,
            app="blog",
            env="dev",
            role=role,
            state="running",
            address=address,
            size="m1.small",
            provider_id=name,
        )
        for name, role, address in (
            ("app-0-blog-dev", "app", "10.0.0.11"),
            ("lb-0-blog-dev", "lb", "10.0.0.2"),
            ("lb-1-blog-dev", "lb", "10.0.0.3"),
        )
    ]
    network = EnvNetwork(
        vip="10.0.0.10",
        public_address="10.0.0.10",
        cidr="10.0.0.0/24",
        router_id=7,
        master_address="10.0.0.1",
    )
    env_pillar.write(tmp_path, record, network, servers, ["app-0-blog-dev"])
    common, lb_only = env_pillar.pillar_files(tmp_path, "blog", "dev")
    assert record.vrrp_secret not in common.read_text()
    assert record.vrrp_secret in lb_only.read_text()
    for path in (common, lb_only):
        assert path.stat().st_mode & 0o077 == 0, (path, oct(path.stat().st_mode))


def test_the_master_keeps_no_minion_private_key(tmp_path: Path) -> None:
    pair = keys.MasterKeys.at(tmp_path / "pki", tmp_path / "cache").preseed("app-0-blog-dev")
    stored = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert stored, "preseed stored nothing"
    for path in stored:
        assert "PRIVATE KEY" not in path.read_text(), path
    assert "PRIVATE KEY" in pair.private_pem  # handed to the server, never kept


def test_https_key_on_the_load_balancers_is_root_only_and_never_shown() -> None:
    text = (STATES / "lb" / "config.sls").read_text()
    block = text.split("gdl-lb-tls-pem:\n  file.managed:")[1].split("\n\n")[0]
    for line in ("- mode: '0600'", "- user: root", "- show_changes: false"):
        assert line in block, line
    # From the pillar when the state runs: the key is no part of the state's data.
    assert "- contents_pillar: gdl:tls:pem" in block


def test_https_keys_on_the_master_are_root_only(tmp_path: Path) -> None:
    from gdl import certs

    certs.ensure_env_cert(tmp_path, "blog", "dev", ["10.0.0.10"])
    for key in (certs.ca_paths(tmp_path)[1], certs.cert_paths(tmp_path, "blog", "dev")[1]):
        assert key.stat().st_mode & 0o077 == 0, key
        assert key.parent.stat().st_mode & 0o077 == 0, key.parent
