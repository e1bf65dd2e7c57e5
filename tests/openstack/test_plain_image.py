"""First boot on an image without Salt: the minion comes from the master alone.

The rig's plain image (``gdl-rig-plain``) has no ``/opt/gdl/salt``: as on a real cloud
(``salt_in_image: false``), the master serves a wheelhouse of its own Salt on its
package port and each server's first boot installs the minion from there, through
the router's SNAT, the only way out of the cloud. The wheelhouse comes from the
tests' cache (tests/support/wheelhouse.py), put where the master would have built it.

One server's first boot is broken the way a cloud breaks it: its port (made before
the build, with gdl's marks, so the build takes it as its own) is in a security group
that lets it reach the cloud's own network and metadata service, and nothing outside,
so the master's package source never answers it. The build fails with that server's
console end; the next build replaces it (the new server on a port gdl makes) and
serves at the floating IP, every server's Salt installed from the master.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import salt.version

from gdl import naming, salt_wheelhouse
from gdl.providers.openstack import MARK_SERVER
from gdl_harness.salt_daemons import SaltMaster
from tests.openstack.masters import outside_master
from tests.openstack.test_build import (
    build,
    env_servers,
    floating_ip,
    host_pid,
    in_host,
    leftovers,
)
from tests.support.runs import refusal, run, served_by
from tests.support.wheelhouse import seed_master

pytestmark = [pytest.mark.integration, pytest.mark.long]

APP = "blog"
PLAIN_IMAGE = "gdl-rig-plain"
BUILD_TIMEOUT = 1500
# Long enough for a healthy server to install Salt from the wheelhouse on a busy
# machine, short enough that the broken one's wait ends soon: its console by then
# shows an attempt that failed (each waits 30 s for the package source).
BROKEN_MINION_TIMEOUT = 180
MINION_TIMEOUT = 600
METADATA = "169.254.169.254/32"


@pytest.fixture(scope="module")
def plain_master(tmp_path_factory, rig, admin, openstack_section) -> Iterator[SaltMaster]:
    """A master outside the cloud, for the plain image, its wheelhouse in place."""
    settings = {
        **openstack_section,
        "image": PLAIN_IMAGE,
        "salt_in_image": False,
        "minion_timeout": BROKEN_MINION_TIMEOUT,
    }

    def wheelhouse(master: SaltMaster, _profiles: Path) -> None:
        # The master's defaults: Debian 12's Python 3.11 on x86_64, as the rig's instances run.
        seed_master(master.state_dir, salt_wheelhouse.Target(salt_version=salt.version.__version__))

    with outside_master(tmp_path_factory, admin, "plainmaster", settings, wheelhouse) as master:
        yield master


@pytest.fixture
def no_way_out(demo) -> Iterator[Any]:
    """A security group whose ports reach the private network and metadata, nothing else."""
    subnet = demo.network.find_subnet("private-subnet")
    group = demo.network.create_security_group(name=f"gdl-test-no-way-out-{secrets.token_hex(3)}")
    try:
        for rule in list(demo.network.security_group_rules(security_group_id=group.id)):
            demo.network.delete_security_group_rule(rule)  # Neutron's "any egress" pair
        for remote, protocol, port in ((subnet.cidr, None, None), (METADATA, "tcp", 80)):
            demo.network.create_security_group_rule(
                security_group_id=group.id,
                direction="egress",
                ethertype="IPv4",
                remote_ip_prefix=remote,
                protocol=protocol,
                port_range_min=port,
                port_range_max=port,
            )
        yield group
    finally:
        # Its port goes with the server that used it; wait for that before removing it.
        deadline = time.monotonic() + 120
        while list(demo.network.ports(security_group_ids=[group.id])):
            if time.monotonic() > deadline:
                break
            time.sleep(1)
        demo.network.delete_security_group(group, ignore_missing=True)


def cut_off_port(demo, group, app: str, env: str, name: str) -> Any:
    """The port server ``name`` will be given, made beforehand in ``group``, with gdl's marks."""
    network = demo.network.find_network("private")
    subnet = demo.network.find_subnet("private-subnet")
    port = demo.network.create_port(
        name=name,
        network_id=network.id,
        fixed_ips=[{"subnet_id": subnet.id}],
        security_group_ids=[group.id],
    )
    marks = {**naming.ownership(app, env, "app"), MARK_SERVER: name}
    demo.network.set_tags(port, [f"{key}={value}" for key, value in marks.items()])
    return port


def console(demo, server_id: str) -> str:
    return str(demo.compute.get_server_console_output(server_id).get("output") or "")


def test_a_plain_image_takes_salt_from_the_master_and_a_broken_first_boot_is_replaced(
    plain_master, rig, demo, env_name, no_way_out
):
    env = env_name()
    broken = naming.server_name("app", 0, APP, env)
    port = cut_off_port(demo, no_way_out, APP, env, broken)
    target = salt_wheelhouse.Target(salt_version=salt.version.__version__)
    source = f"http://{plain_master.interface}:{plain_master.package_port}/{target.name}/"
    started = time.monotonic()
    try:
        code, _data, output = build(plain_master, env, 1, timeout=BUILD_TIMEOUT)
        failed_after = time.monotonic() - started
        assert code != 0, output
        first, *shown = refusal(output).splitlines()
        assert f"the minions of {broken} did not answer within {BROKEN_MINION_TIMEOUT} s" in (
            first
        ), output
        # Its console's end, from Nova: the first boot that could not reach the master.
        assert shown and shown[0].startswith(f"{broken}: "), shown
        said = "\n".join(shown)
        assert f"gdl-minion-install: cannot read {source}" in said, said
        assert "gdl-minion-install: attempt 1 of" in said, said
        (server,) = [s for s in env_servers(demo, APP, env) if s.name == broken]
        assert server.status == "ACTIVE"
        assert broken not in plain_master.keys.cached_minions()

        # The cloud is the same; the next build replaces the server, on a port of its own.
        plain_master.gdl_settings["openstack"]["minion_timeout"] = MINION_TIMEOUT
        plain_master.write_config()
        code, result, output = build(plain_master, env, 1, timeout=BUILD_TIMEOUT)
        assert code == 0, output
        assert f"replace {broken} (broken)" in result["plan"], result["plan"]
        servers = {s.name: s for s in env_servers(demo, APP, env)}
        assert sorted(servers) == sorted(
            naming.server_name(role, i, APP, env) for role, i in (("app", 0), ("lb", 0), ("lb", 1))
        )
        assert servers[broken].id != server.id
        assert port.id not in {p.id for p in demo.network.ports()}  # gone with the server
        (new_port,) = demo.network.ports(device_id=servers[broken].id)
        assert new_port.security_group_ids != [no_way_out.id]
        url = f"http://{floating_ip(demo, env)}/"
        assert result["url"] == url
        assert served_by(url, 4) == [broken] * 4
        # Every server installed the master's Salt from the master's package source.
        for name, each in servers.items():
            assert f"gdl-minion-install: Salt installed from {source}" in console(demo, each.id), (
                name
            )
            pid = host_pid(rig, each.id)
            shown_version = in_host(pid, "/opt/gdl/salt/bin/salt-minion", "--version").stdout
            assert shown_version.split()[:2] == ["salt-minion", target.salt_version], name
            assert in_host(pid, "test", "-L", "/opt/gdl/salt").returncode != 0, name
        print(
            f"plain image: failed build {failed_after:.0f} s, "
            f"story {time.monotonic() - started:.0f} s"
        )
    finally:
        code, _data, output = run(plain_master, "gdl.destroy", f"app={APP}", f"env={env}")
    assert code == 0, output
    assert leftovers(demo, rig, APP, env) == []
