"""Root in a local host is not root on the machine: what a host's processes can reach.

Real hosts of a cloud of their own (no salt-master: their minions try a closed
port and never join), looked at from inside, through the provider's ``run``,
and from the machine, through ``/proc``.  Each point here is what docs/security.md
says about local hosts.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gdl import keys
from gdl.providers.base import ServerRequest
from gdl.providers.local import LocalProvider, isolation, lifecycle, network
from gdl_harness.local_cloud import make_bridge, remove_cloud

pytestmark = pytest.mark.integration

if os.geteuid() != 0:
    pytest.skip("local hosts need root", allow_module_level=True)

OPERATOR_SECRET = "operator-password-never-in-a-host"
HOST = "app-0-conf-a"
NEIGHBOUR = "app-1-conf-a"  # the same environment
STRANGER = "app-0-conf-b"  # another environment

# Connect to a closed port: "refused" proves the address answers.
REACHES = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], 9), timeout=3)
except ConnectionRefusedError:
    print("refused", end="")
except OSError as exc:
    print(exc, end="")
"""

# What no process of a host may hold: modules, raw I/O, reboot, clock, device
# nodes, tracing, mounts (which would undo every read-only mount).
DROPPED = {
    # open_by_handle_at: a file of the machine by its handle, past the host's mounts.
    "dac_read_search": 2,
    "sys_module": 16,
    "sys_rawio": 17,
    "sys_ptrace": 19,
    "sys_admin": 21,
    "sys_boot": 22,
    "sys_time": 25,
    "mknod": 27,
}


def request(name: str) -> ServerRequest:
    pair = keys.generate(bits=1024)
    parts = name.split("-")
    return ServerRequest(
        name=name,
        app=parts[2],
        env=parts[3],
        role=parts[0],
        size="m1.tiny",
        minion_public_key=pair.public_pem,
        minion_private_key=pair.private_pem,
        master_address="",
    )


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalProvider]:
    bridge, cidr = make_bridge(prefix=29)
    provider = LocalProvider(
        state_dir=tmp_path_factory.mktemp("confine") / "local",
        bridge=bridge,
        cidr=cidr,
        master_port=1,
        publish_port=1,
    )
    # Whoever makes the hosts has a cloud password in the environment.
    os.environ["OS_PASSWORD"] = OPERATOR_SECRET
    try:
        provider.create_servers([request(HOST), request(NEIGHBOUR), request(STRANGER)])
    finally:
        del os.environ["OS_PASSWORD"]
    try:
        yield provider
    finally:
        remove_cloud(provider)
        network.remove_bridge(bridge)


def run_in(provider: LocalProvider, name: str, script: str) -> subprocess.CompletedProcess:
    argv = provider.run(name, ["sh", "-c", script])
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def host_processes(provider: LocalProvider, name: str) -> list[int]:
    """Every process of the host, seen from the machine (its PID namespace's members)."""
    pid1 = int(provider.get_server(name).extra["pid"])
    namespace = os.readlink(f"/proc/{pid1}/ns/pid")
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/ns/pid") == namespace:
                    found.append(int(entry))
            except OSError:
                continue  # ended meanwhile
    return found


def wait_for_services(provider: LocalProvider, name: str) -> list[int]:
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pids = host_processes(provider, name)
        if len(pids) > 1:  # PID 1 and its minion
            return pids
        time.sleep(0.2)
    raise AssertionError(f"no service started in {name}")


def capabilities(pid: int, which: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(which + ":"):
            return int(line.split()[1], 16)
    raise AssertionError(which)


def test_a_host_sees_only_harmless_devices(cloud: LocalProvider) -> None:
    listed = run_in(cloud, HOST, "ls -A /dev")
    assert listed.returncode == 0, listed.stderr
    assert set(listed.stdout.split()) == {
        *("null", "zero", "full", "random", "urandom", "tty", "pts", "ptmx", "shm"),
        *("fd", "stdin", "stdout", "stderr"),
    }
    # No block device of the machine anywhere under /dev; the ordinary ones work.
    blocks = run_in(cloud, HOST, "find /dev -xdev -type b; find /dev/pts -type b")
    assert blocks.stdout == ""
    works = run_in(cloud, HOST, "head -c 4 /dev/urandom | wc -c > /dev/null && echo ok")
    assert works.stdout.strip() == "ok", works.stderr
    # Its terminals are its own: none of the machine's.
    machine_ptys = {p for p in os.listdir("/dev/pts") if p.isdigit()}
    host_ptys = set(run_in(cloud, HOST, "ls /dev/pts").stdout.split()) - {"ptmx"}
    assert not (host_ptys & machine_ptys) or not machine_ptys


def test_kernel_settings_are_read_only_in_a_host(cloud: LocalProvider) -> None:
    for path in (
        "/proc/sys/net/ipv4/ip_forward",
        "/proc/sys/kernel/hostname",
        "/proc/sys/vm/drop_caches",
        "/sys/class/net/eth0/mtu",
    ):
        written = run_in(cloud, HOST, f"echo 1 > {path}")
        assert written.returncode != 0, path
        assert "Read-only file system" in written.stderr, (path, written.stderr)
    remount = run_in(cloud, HOST, "mount -o remount,rw /proc/sys || umount -l /proc/sys")
    assert remount.returncode != 0
    assert run_in(cloud, HOST, "test -w /proc/sys/net/ipv4/ip_forward && echo rw").stdout == ""
    # What keepalived would set itself is set from outside, in the host's namespace.
    setting = run_in(cloud, HOST, "cat /proc/sys/net/ipv4/conf/eth0/promote_secondaries")
    assert setting.stdout.strip() == "1"


def test_no_process_of_a_host_holds_what_no_role_needs(cloud: LocalProvider) -> None:
    pids = wait_for_services(cloud, HOST)
    for pid in pids:
        for which in ("CapBnd", "CapPrm", "CapEff", "CapInh", "CapAmb"):
            held = capabilities(pid, which)
            assert not [n for n, bit in DROPPED.items() if held & (1 << bit)], (pid, which)
    # A command run in the host gets no more than the host's own processes.
    inside = run_in(cloud, HOST, "grep CapBnd /proc/self/status")
    assert int(inside.stdout.split()[1], 16) == capabilities(pids[0], "CapBnd")
    denied = run_in(cloud, HOST, "mknod /tmp/disk b 8 0")
    assert denied.returncode != 0


def test_a_host_gets_nothing_of_its_makers_environment(cloud: LocalProvider) -> None:
    pids = wait_for_services(cloud, HOST)
    for pid in pids:
        environment = Path(f"/proc/{pid}/environ").read_bytes()
        assert OPERATOR_SECRET.encode() not in environment, pid
        assert b"OS_PASSWORD" not in environment, pid
    os.environ["OS_PASSWORD"] = OPERATOR_SECRET
    try:
        inside = run_in(cloud, HOST, "env")
    finally:
        del os.environ["OS_PASSWORD"]
    assert "OS_PASSWORD" not in inside.stdout
    assert "PATH=" in inside.stdout


def test_the_hosts_file_refresh_follows_no_link_of_the_host(
    cloud: LocalProvider, tmp_path: Path
) -> None:
    victim = tmp_path / "machine-file"
    victim.write_text("the machine's own\n")
    # The host points the names the refresh writes at a file of the machine.
    planted = run_in(
        cloud, HOST, f"ln -sf {victim} /etc/.hosts.gdl && ln -sf {victim} /etc/hosts.gdl"
    )
    assert planted.returncode == 0, planted.stderr
    lifecycle.refresh_hosts_files(cloud.records, cloud.gateway)
    assert victim.read_text() == "the machine's own\n"
    hosts = run_in(cloud, HOST, "cat /etc/hosts").stdout
    assert f"{cloud.gateway}\tsalt gdl-master" in hosts
    assert HOST in hosts
    # A host whose /etc is a link gets no write anywhere else either.
    moved = run_in(cloud, HOST, f"mv /etc /etc.real && ln -s {tmp_path} /etc")
    try:
        assert moved.returncode == 0, moved.stderr
        lifecycle.refresh_hosts_files(cloud.records, cloud.gateway)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["machine-file"]
        assert victim.read_text() == "the machine's own\n"
    finally:
        run_in(cloud, HOST, "rm /etc && mv /etc.real /etc")


def reaches(provider: LocalProvider, name: str | None, address: str) -> bool:
    """True when ``address`` answers ``name`` (the machine when None)."""
    command = ["python3", "-c", REACHES, address]
    argv = provider.run(name, command) if name else command
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    return done.stdout == "refused"


def test_environments_are_kept_apart_on_the_bridge(cloud: LocalProvider) -> None:
    address = {name: cloud.get_server(name).address for name in (HOST, NEIGHBOUR, STRANGER)}
    assert reaches(cloud, HOST, address[NEIGHBOUR])
    assert reaches(cloud, NEIGHBOUR, address[HOST])
    assert not reaches(cloud, HOST, address[STRANGER])
    assert not reaches(cloud, STRANGER, address[HOST])
    assert not reaches(cloud, STRANGER, address[NEIGHBOUR])
    # The master, on the bridge, still reaches every environment.
    for name in (HOST, NEIGHBOUR, STRANGER):
        assert reaches(cloud, None, address[name]), name
        assert reaches(cloud, name, cloud.gateway), name


def test_a_host_answers_for_its_own_address_only(cloud: LocalProvider) -> None:
    taken = set(cloud.records.used_addresses()) | {cloud.gateway}
    free = next(str(a) for a in cloud.cidr.hosts() if str(a) not in taken)
    prefix = cloud.cidr.prefixlen
    # A host of the environment claims an address that is not its own (a VIP, say).
    claimed = run_in(cloud, NEIGHBOUR, f"ip addr add {free}/{prefix} dev eth0")
    assert claimed.returncode == 0, claimed.stderr
    try:
        assert not reaches(cloud, None, free)
        assert not reaches(cloud, HOST, free)
    finally:
        run_in(cloud, NEIGHBOUR, f"ip addr del {free}/{prefix} dev eth0")
    assert reaches(cloud, None, cloud.get_server(NEIGHBOUR).address)


# Writes one Ethernet frame from the host's eth0 with a raw socket (root in a host
# keeps net_raw): "arp OWN TARGET" asks who has TARGET as OWN; "TYPE MARK" (TYPE in
# hex) carries MARK after the header.
SEND_FRAME = """
import socket, struct, sys
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
sock.bind(("eth0", 0))
mac = sock.getsockname()[4]
if sys.argv[1] == "arp":
    body = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, mac,
                       socket.inet_aton(sys.argv[2]), bytes(6), socket.inet_aton(sys.argv[3]))
    sock.send(bytes([255] * 6) + mac + bytes.fromhex("0806") + body)
else:
    sock.send(bytes([255] * 6) + mac + bytes.fromhex(sys.argv[1]) + sys.argv[2].encode())
"""


def frames_on_the_bridge(cloud: LocalProvider, send: list[list[str]]) -> list[bytes]:
    """The frames the machine's end of the bridge gets while NEIGHBOUR sends ``send``."""
    import socket
    import time

    capture = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    try:
        capture.bind((cloud.bridge, 0))
        capture.settimeout(0.2)
        for args in send:
            argv = cloud.run(NEIGHBOUR, ["python3", "-c", SEND_FRAME, *args])
            sent = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            assert sent.returncode == 0, sent.stderr
        seen, deadline = [], time.monotonic() + 2
        while time.monotonic() < deadline:
            try:
                seen.append(capture.recv(65535))
            except TimeoutError:
                continue
        return seen
    finally:
        capture.close()


def test_only_ipv4_and_arp_of_its_own_address_leave_a_host(cloud: LocalProvider) -> None:
    import socket

    own = cloud.get_server(NEIGHBOUR).address
    other = cloud.get_server(HOST).address
    seen = frames_on_the_bridge(
        cloud,
        [
            ["arp", own, cloud.gateway],  # its own address: passes
            ["arp", other, cloud.gateway],  # posing as HOST
            ["86dd", "gdl-ipv6-mark"],  # IPv6, which no role uses
            ["88b5", "gdl-raw-mark"],  # a protocol of its own
        ],
    )
    # Only NEIGHBOUR's frames count: HOST may well send ARP of its own meanwhile.
    argv = cloud.run(NEIGHBOUR, ["cat", "/sys/class/net/eth0/address"])
    mac = bytes.fromhex(
        subprocess.run(argv, capture_output=True, text=True, timeout=30)
        .stdout.strip()
        .replace(":", "")
    )
    arp_sources = {
        socket.inet_ntoa(frame[28:32])
        for frame in seen
        if frame[12:14] == b"\x08\x06" and frame[6:12] == mac
    }
    assert own in arp_sources
    assert other not in arp_sources
    assert not [f for f in seen if b"gdl-ipv6-mark" in f or b"gdl-raw-mark" in f]


def test_the_filtering_goes_with_the_last_host(tmp_path: Path) -> None:
    bridge, cidr = make_bridge(prefix=29)
    provider = LocalProvider(
        state_dir=tmp_path / "local", bridge=bridge, cidr=cidr, master_port=1, publish_port=1
    )
    try:
        provider.create_servers([request(HOST), request(STRANGER)])
        assert isolation.env_chain(provider.tag, "conf", "a") in isolation.chains(provider.tag)
        provider.delete_servers([HOST])
        assert isolation.env_chain(provider.tag, "conf", "a") not in isolation.chains(provider.tag)
        assert isolation.env_chain(provider.tag, "conf", "b") in isolation.chains(provider.tag)
        provider.delete_servers([STRANGER])
        assert isolation.chains(provider.tag) == []
        assert (
            f"gdl-{provider.tag}"
            not in subprocess.run(["ebtables", "-L"], capture_output=True, text=True).stdout
        )
    finally:
        remove_cloud(provider)
        network.remove_bridge(bridge)
