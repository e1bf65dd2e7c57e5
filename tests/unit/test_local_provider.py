"""LocalProvider's bookkeeping: sizes, names, reservations and refusals that make nothing.

Nothing here touches the kernel: the cidr is given, so no bridge is read, and
every request refused is refused before a host would be made.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from gdl import naming
from gdl.config import Settings
from gdl.errors import CapacityError, NameClash
from gdl.providers.base import ServerRequest
from gdl.providers.local import SIZES, LocalProvider, host, network
from gdl.providers.local.boot import _outermost, boot_description, fresh_dirs


@pytest.fixture(autouse=True)
def bridge_exists(monkeypatch: pytest.MonkeyPatch) -> None:
    # The unit tests' cloud has a bridge, as far as the provider can tell.
    real = network.link_exists
    monkeypatch.setattr(network, "link_exists", lambda name: name == "gdlut0" or real(name))


def provider(tmp_path: Path, cidr: str = "10.77.0.0/24") -> LocalProvider:
    return LocalProvider(
        state_dir=tmp_path / "local",
        bridge="gdlut0",
        cidr=cidr,
        master_port=4506,
        publish_port=4505,
    )


def request(name: str, size: str = "m1.small", env: str | None = None) -> ServerRequest:
    parsed = naming.parse_server_name(name)
    assert parsed is not None
    return ServerRequest(
        name=name,
        app=parsed.app,
        env=env or parsed.env,
        role=parsed.role,
        size=size,
        minion_public_key="PUB",
        minion_private_key="PRIV",
        master_address="10.77.0.1",
    )


def made_nothing(p: LocalProvider) -> bool:
    return not p.hosts_dir.exists() or not any(p.hosts_dir.iterdir())


def test_sizes_are_the_classic_flavors() -> None:
    assert list(SIZES) == ["m1.tiny", "m1.small", "m1.medium", "m1.large", "m1.xlarge"]
    assert (SIZES["m1.tiny"].memory_mb, SIZES["m1.tiny"].vcpus) == (512, 1)
    assert (SIZES["m1.xlarge"].memory_mb, SIZES["m1.xlarge"].vcpus) == (16384, 8)


def test_from_settings_defaults(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, local={"bridge": "gdlx1", "cidr": "10.1.2.0/24"})
    p = LocalProvider.from_settings(settings)
    assert p.state_dir == tmp_path / "local"
    assert p.bridge == "gdlx1" and p.gateway == "10.1.2.1"
    assert str(tmp_path) in p.hidden_dirs


def test_kernel_names_are_unique_per_cloud_and_short() -> None:
    name = "app-999-abcdefghijklmnopqrstuvwx-abcdefghijklmnop"
    assert naming.parse_server_name(name) is not None
    a = host.HostNames.of(host.cloud_tag("gdl0", Path("/a")), name)
    b = host.HostNames.of(host.cloud_tag("gdl0", Path("/b")), name)
    assert len(a.veth) <= 15 and len(b.veth) <= 15
    assert a.veth != b.veth and a.netns != b.netns and a.cgroup != b.cgroup


def test_bad_size_is_one_line_and_makes_nothing(tmp_path: Path) -> None:
    p = provider(tmp_path)
    with pytest.raises(CapacityError) as caught:
        p.create_servers([request("app-0-blog-dev"), request("app-1-blog-dev", size="m1.huge")])
    assert str(caught.value) == (
        "size 'm1.huge' is not a local size: use one of: "
        "m1.tiny, m1.small, m1.medium, m1.large, m1.xlarge"
    )
    assert made_nothing(p)


def test_existing_name_clashes_and_makes_nothing(tmp_path: Path) -> None:
    p = provider(tmp_path)
    network.write_json(
        p.hosts_dir / "app-0-blog-dev" / "host.json",
        {
            "name": "app-0-blog-dev",
            "app": "blog",
            "env": "qa",
            "role": "app",
            "size": "m1.small",
            "address": "10.77.0.2",
            "pid": 1,
            "starttime": 0,
        },
    )
    with pytest.raises(NameClash) as caught:
        p.create_servers([request("app-1-blog-dev"), request("app-0-blog-dev")])
    assert "\n" not in str(caught.value)
    assert "app-0-blog-dev exists already (environment blog-qa)" in str(caught.value)
    assert sorted(x.name for x in p.hosts_dir.iterdir()) == ["app-0-blog-dev"]


def test_the_same_name_twice_clashes(tmp_path: Path) -> None:
    p = provider(tmp_path)
    with pytest.raises(NameClash):
        p.create_servers([request("app-0-blog-dev"), request("app-0-blog-dev")])
    assert made_nothing(p)


def test_full_subnet_makes_nothing(tmp_path: Path) -> None:
    p = provider(tmp_path, cidr="10.77.0.0/29")  # 5 addresses after the gateway
    p.ensure_env("blog", "dev")  # takes one for the VIP
    names = [f"app-{i}-blog-dev" for i in range(5)]
    with pytest.raises(CapacityError) as caught:
        p.create_servers([request(n) for n in names])
    assert str(caught.value).startswith("subnet 10.77.0.0/29 of the local cloud has 4 free")
    assert made_nothing(p)


def test_env_reservation_is_stable_and_released(tmp_path: Path) -> None:
    p = provider(tmp_path)
    first = p.ensure_env("blog", "dev")
    assert first == p.ensure_env("blog", "dev") == p.find_env("blog", "dev")
    assert first.vip == "10.77.0.2" and first.master_address == "10.77.0.1"
    assert first.public_address == first.vip and first.cidr == "10.77.0.0/24"
    assert first.router_id == naming.preferred_router_id("blog", "dev")
    assert p.list_envs() == [("blog", "dev")]
    p.teardown_env("blog", "dev")
    p.teardown_env("blog", "dev")  # idempotent
    assert p.find_env("blog", "dev") is None and p.list_envs() == []


def test_router_ids_and_vips_are_unique_per_cloud(tmp_path: Path, monkeypatch) -> None:
    # Every environment prefers the same id here: each must still get its own.
    monkeypatch.setattr(naming, "preferred_router_id", lambda app, env: 200)
    p = provider(tmp_path)
    envs = [p.ensure_env("blog", f"e{i}") for i in range(5)]
    assert sorted(e.router_id for e in envs) == [200, 201, 202, 203, 204]
    assert len({e.vip for e in envs}) == 5


def test_parallel_reservations_never_share_an_address(tmp_path: Path) -> None:
    results = []

    def reserve(i: int) -> None:
        # A provider per thread, as salt-cloud -P has one per process.
        results.append(provider(tmp_path).ensure_env("blog", f"p{i}").vip)

    threads = [threading.Thread(target=reserve, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 20 and len(set(results)) == 20


def test_boot_description_hides_the_masters_files(tmp_path: Path) -> None:
    settings = Settings(
        state_dir=Path("/var/lib/gdl"),
        pki_dir=Path("/etc/salt/pki/master"),
        local={
            "bridge": "gdlut0",
            "cidr": "10.77.0.0/24",
            "master_port": 4506,
            "publish_port": 4505,
            "state_dir": str(tmp_path / "local"),
        },
    )
    p = LocalProvider.from_settings(settings)
    stage_dir = p.hosts_dir / "lb-0-blog-dev" / "root"
    boot = boot_description(
        p.host_settings(), request("lb-0-blog-dev"), SIZES["m1.tiny"], stage_dir, []
    )
    assert "/var/lib/gdl" in boot["fresh_dirs"] and "/etc/salt" in boot["fresh_dirs"]
    assert "/etc/salt/pki/master" not in boot["fresh_dirs"]  # hidden with /etc/salt
    assert not any(d.startswith("/tmp") for d in boot["fresh_dirs"])
    assert boot["hostname"] == "lb-0-blog-dev" and boot["disk_bytes"] == 1024**3
    assert boot["files"]["/etc/salt/pki/minion/minion.pem"] == {"text": "PRIV", "mode": "400"}
    minion = boot["files"]["/etc/salt/minion"]["text"]
    assert "id: lb-0-blog-dev" in minion and "acceptance_wait_time: 1" in minion
    assert "master: 10.77.0.1" in minion and "gdl_role: lb" in minion
    assert "auto_accept" not in minion and "open_mode" not in minion
    finger = ":".join(["ab"] * 32)
    pinned = boot_description(
        p.host_settings(),
        ServerRequest(**{**request("lb-0-blog-dev").__dict__, "master_finger": finger}),
        SIZES["m1.tiny"],
        stage_dir,
        [],
    )
    assert f"master_finger: '{finger}'" in pinned["files"]["/etc/salt/minion"]["text"]


def test_outermost_keeps_only_the_tops() -> None:
    assert _outermost(["/etc/salt", "/etc/salt/pki/master", "/srv", "/srv/", "/var/lib/gdl"]) == [
        "/etc/salt",
        "/srv",
        "/var/lib/gdl",
    ]


def test_deleting_what_does_not_exist_is_not_an_error(tmp_path: Path) -> None:
    assert provider(tmp_path).delete_servers(["app-0-none-dev"]) == []


def test_the_minions_interpreter_is_never_hidden() -> None:
    candidates = ["/etc/salt", "/root", "/srv", "/tmp/x", "/run/y", "/var/lib/gdl"]
    needed = ["/root/.pyenv/versions/3.11/bin/python3.11", "/opt/gdl/venv"]
    assert fresh_dirs(candidates, needed) == ["/etc/salt", "/srv", "/var/lib/gdl"]


def test_a_hosts_console_is_read_from_its_root_without_following_links(tmp_path):
    # This process stands in for a host: /proc/<pid>/root is its root, "/" here.
    tmp_path = tmp_path.resolve()  # no link on the way to the test's own files
    console = tmp_path / "var" / "log" / "console.log"
    console.parent.mkdir(parents=True)
    console.write_text("".join(f"line {i}\n" for i in range(1, 31)))
    assert host.read_tail(os.getpid(), str(console), 3) == ["line 28", "line 29", "line 30"]
    # A link the host planted (to a file of the machine) is not followed, last part or not.
    secret = tmp_path / "secret"
    secret.write_text("machine secret\n")
    (tmp_path / "var" / "log" / "planted.log").symlink_to(secret)
    (tmp_path / "linked").symlink_to(tmp_path / "var")
    for path in (console.parent / "planted.log", tmp_path / "linked" / "log" / "console.log"):
        with pytest.raises(OSError):
            host.read_tail(os.getpid(), str(path), 3)
