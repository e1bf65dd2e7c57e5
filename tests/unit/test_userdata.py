"""The cloud-init user data a server boots with."""

import shutil
import stat
import subprocess

import pytest
import yaml

from gdl import userdata
from gdl.providers.base import ServerRequest

PRIVATE = "-----BEGIN RSA PRIVATE KEY-----\nsecret-material\n-----END RSA PRIVATE KEY-----\n"
PUBLIC = "-----BEGIN PUBLIC KEY-----\npublic-material\n-----END PUBLIC KEY-----\n"


def request(**changes):
    fields = {
        "name": "lb-1-blog-dev",
        "app": "blog",
        "env": "dev",
        "role": "lb",
        "size": "m1.small",
        "minion_public_key": PUBLIC,
        "minion_private_key": PRIVATE,
        "master_address": "10.20.0.2",
    }
    fields.update(changes)
    return ServerRequest(**fields)


def parse(text):
    first, body = text.split("\n", 1)
    assert first == "#cloud-config"
    return yaml.safe_load(body)


def files(document):
    return {f["path"]: f for f in document["write_files"]}


def test_minion_config_names_master_and_id():
    written = files(parse(userdata.render(request())))
    config = yaml.safe_load(written[userdata.MINION_CONFIG]["content"])
    assert config["master"] == "10.20.0.2"
    assert config["id"] == "lb-1-blog-dev"
    assert config["grains"]["gdl"] == {"app": "blog", "env": "dev", "role": "lb"}


def test_preseeded_pair_lands_in_the_minion_pki_dir():
    written = files(parse(userdata.render(request())))
    pem = written["/etc/salt/pki/minion/minion.pem"]
    pub = written["/etc/salt/pki/minion/minion.pub"]
    assert pem["content"] == PRIVATE
    assert pub["content"] == PUBLIC
    # The private key is readable by its owner only (salt-minion refuses looser modes).
    assert int(pem["permissions"], 8) == stat.S_IRUSR
    assert pem["owner"] == "root:root"


def test_without_a_source_installs_a_ranged_salt_from_the_index_and_starts_the_minion():
    document = parse(userdata.render(request()))
    script = files(document)[userdata.INSTALL_SCRIPT]
    assert "'salt>=3008.4,<3009'" in script["content"]
    assert f"index_url={userdata.PUBLIC_INDEX}" in script["content"]
    assert "salt-minion" in script["content"]
    assert script["permissions"] == "0755"
    assert document["runcmd"] == [[userdata.INSTALL_SCRIPT]]
    # Nothing from the distribution's mirror: no python3-venv.
    assert "packages" not in document
    assert document["hostname"] == "lb-1-blog-dev"


MASTER = userdata.master_source("10.20.0.2", 4507, "salt-3008.4-cp311-x86_64", "3008.4")


def script_of(source=MASTER):
    return files(parse(userdata.render(request(), source=source)))[userdata.INSTALL_SCRIPT][
        "content"
    ]


def test_first_boot_installs_the_masters_salt_from_the_master_alone():
    script = script_of()
    assert "find_links=http://10.20.0.2:4507/salt-3008.4-cp311-x86_64/" in script
    assert "requirement=salt==3008.4" in script
    assert "index_url=''" in script
    assert 'where="--no-index"' in script
    # pip takes plain HTTP from the master only when told to.
    assert "trusted_host=10.20.0.2" in script and "--trusted-host $trusted_host" in script
    # No python3-venv needed: a venv without pip, and pip run from its own wheel.
    assert "python3 -m venv --without-pip" in script
    assert '"$wheel/pip" install' in script
    assert "ensurepip" not in script and "python3-venv" not in script
    assert "pypi.org" not in script


def test_first_boot_retries_with_back_off_and_says_every_failure():
    script = script_of()
    assert f"attempts={userdata.ATTEMPTS}" in script
    assert "until install_salt; do" in script
    assert "wait=$((wait * 2))" in script
    assert f'[ "$wait" -gt {userdata.MAX_WAIT} ] && wait={userdata.MAX_WAIT}' in script
    # Every failure goes to stderr, which cloud-init copies to the console.
    assert 'say() { echo "gdl-minion-install: $*" >&2; }' in script
    for failure in (
        "python3 -m venv failed",
        "cannot fetch pip's wheel",
        "failed; trying again",
        "giving up",
        "salt-minion did not start",
    ):
        assert failure in script
    # The loop decides: set -e would end the script at the first failed attempt.
    assert "set -e" not in script


def test_a_mirror_and_a_proxy_are_used_besides_the_master():
    source = userdata.master_source(
        "10.20.0.2",
        4507,
        "salt-3008.4-cp311-x86_64",
        "3008.4",
        index_url="https://mirror.example/simple",
        http_proxy="http://proxy.example:3128",
    )
    script = script_of(source)
    assert "index_url=https://mirror.example/simple" in script
    assert "find_links=http://10.20.0.2:4507/" in script
    assert "http_proxy=http://proxy.example:3128 https_proxy=http://proxy.example:3128" in script
    # The master is reached directly, never through the proxy.
    assert "no_proxy=10.20.0.2" in script
    assert "export http_proxy https_proxy no_proxy" in script


def test_the_install_script_is_plain_sh(tmp_path):
    for source in (MASTER, None):
        path = tmp_path / "install.sh"
        path.write_text(
            script_of(source)
            if source
            else script_of(userdata.SaltSource(index_url="https://x.example/simple"))
        )
        assert path.read_text().startswith("#!/bin/sh\n")
        done = subprocess.run(["sh", "-n", str(path)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        if shutil.which("dash"):
            assert subprocess.run(["dash", "-n", str(path)]).returncode == 0


def test_a_source_needs_somewhere_to_install_from():
    with pytest.raises(ValueError):
        userdata.install_script(userdata.SaltSource())


def test_describe_never_shows_the_private_key():
    text = userdata.render(request())
    summary = userdata.describe(text)
    assert "secret-material" not in summary
    assert "minion.pem" in summary
    assert "\n" not in summary


def test_odd_key_material_survives_yaml():
    odd = "line: with colon\n# not a comment\n  indented\n"
    written = files(parse(userdata.render(request(minion_private_key=odd))))
    assert written["/etc/salt/pki/minion/minion.pem"]["content"] == odd


def test_an_image_with_what_salt_needs_gets_no_package_list():
    # cloud-init's schema refuses `packages: []`: no packages means no key at all.
    document = yaml.safe_load(userdata.render(request(), packages=()).split("\n", 1)[1])
    assert "packages" not in document


def test_master_ports_reach_the_minion_config_only_when_set():
    plain = yaml.safe_load(userdata.minion_config(request()))
    assert "master_port" not in plain and "publish_port" not in plain
    moved = yaml.safe_load(userdata.minion_config(request(), master_port=14506, publish_port=14505))
    assert (moved["master_port"], moved["publish_port"]) == (14506, 14505)


def test_only_root_reaches_the_metadata_service_from_the_first_boot_on():
    document = parse(userdata.render(request()))
    # The first thing the user data runs, at every boot (cloud-init's bootcmd).
    (guard,) = document["bootcmd"]
    assert next(iter(document)) == "bootcmd"
    assert (
        "iptables -w -I OUTPUT 1 -d 169.254.169.254/32 -m owner ! --uid-owner 0 -j REJECT" in guard
    )
    assert "ip daddr 169.254.169.254 meta skuid != 0 reject" in guard
    # Again before Salt is installed (no distribution package is installed by default:
    # the image brings iptables or nft).
    script = files(document)[userdata.INSTALL_SCRIPT]["content"]
    assert script.index("--uid-owner 0") < script.index("pip")
    assert "packages" not in document


FAKE_IPTABLES = """#!/bin/sh
echo "$*" >> "$LOG"
case "$*" in
    *" -C "*) [ -e "$LOG.rule" ] ;;
    *" -I "*) touch "$LOG.rule" ;;
esac
"""


def test_the_metadata_guard_adds_its_rule_once_and_fails_when_it_cannot(tmp_path):
    import os
    import subprocess

    tools = tmp_path / "bin"
    tools.mkdir()
    fake = tools / "iptables"
    fake.write_text(FAKE_IPTABLES)
    fake.chmod(0o755)
    log = tmp_path / "iptables.log"
    environment = {"PATH": f"{tools}:/usr/bin:/bin", "LOG": str(log)}
    for _boot in range(2):
        done = subprocess.run(["sh", "-eu", "-c", userdata.METADATA_GUARD], env=environment)
        assert done.returncode == 0
    inserted = [line for line in log.read_text().splitlines() if "-I OUTPUT" in line]
    assert inserted == ["-w -I OUTPUT 1 -d 169.254.169.254/32 -m owner ! --uid-owner 0 -j REJECT"]
    # No tool to filter with: the guard fails (and the install with it), never silently.
    empty = tmp_path / "empty"
    empty.mkdir()
    done = subprocess.run(
        ["/bin/sh", "-eu", "-c", userdata.METADATA_GUARD],
        env={"PATH": str(empty)},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    assert "metadata service stays open" in done.stderr
    assert os.path.exists(log)
