"""The cloud-init user data a server boots with."""

import stat

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


def test_installs_a_ranged_salt_and_starts_the_minion():
    document = parse(userdata.render(request()))
    script = files(document)[userdata.INSTALL_SCRIPT]
    assert "'salt>=3008.4,<3009'" in script["content"]
    assert "salt-minion" in script["content"]
    assert script["permissions"] == "0755"
    assert document["runcmd"] == [[userdata.INSTALL_SCRIPT]]
    assert "python3-venv" in document["packages"]
    assert document["hostname"] == "lb-1-blog-dev"


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
    # Again before Salt is installed, once cloud-init has installed iptables.
    script = files(document)[userdata.INSTALL_SCRIPT]["content"]
    assert script.index("--uid-owner 0") < script.index("pip")
    assert "iptables" in document["packages"]


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
