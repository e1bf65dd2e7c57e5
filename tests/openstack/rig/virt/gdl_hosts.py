"""The rig's Nova compute driver: instances that boot, as gdl local hosts.

Nova's fake driver marks servers ACTIVE without running anything. This one
builds on it and makes each instance a local host of the kind gdl's local
provider makes (network, mount, PID, UTS and IPC namespaces over a private
overlay of the machine's filesystem), so user data, the minion's start, the
key handshake, the states and the VIP run for real:

- each Neutron network an instance uses is a Linux bridge on the machine
  carrying the subnet's gateway address (the machine stands for the router,
  so a master bound there is reachable as on a real cloud's network);
- the instance's ``eth0`` has the MAC and fixed IP of its Neutron port;
- first boot runs Debian's cloud-init inside the host, from a NoCloud seed
  made of the instance's user data and metadata, as a cloud image would;
- the "image" has Salt installed: ``/opt/gdl/salt`` is the virtualenv the rig
  was started with, so gdl's user data finds Salt and installs nothing;
- power off, power on, reboot and delete act on the host; ``get_info``
  reports the host's own state, so a host that died shows as shut down.

Disks are ephemeral: a host's writes live in its memory, so a reboot is a
fresh first boot (gdl's user data is written to run again safely).

Nova loads this as ``compute_driver = gdl_hosts.LocalHostDriver``; the rig's
``libexec/service`` puts this directory on ``nova.virt``'s package path. The
same file is the rig's command line for what outlives nova-compute::

    gdl_hosts.py ensure-bridge STATE NETWORK_ID GATEWAY/PREFIX
    gdl_hosts.py list STATE
    gdl_hosts.py cleanup STATE      # every host and bridge, by recorded PID
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import ipaddress
import os
import subprocess
import sys
import time
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[4]
if str(CHECKOUT) not in sys.path:
    sys.path.insert(0, str(CHECKOUT))

from gdl import naming  # noqa: E402 - the checkout's gdl, found through the path above
from gdl.providers.local import host, network  # noqa: E402
from gdl.providers.local.boot import FRESH_DIRS, fresh_dirs, machine_dirs  # noqa: E402

IMAGE_SALT_PREFIX = "/opt/gdl/salt"
CLOUD_CFG = """\
# The rig's image: NoCloud only; the address comes from the Neutron port, not from DHCP.
datasource_list: [NoCloud, None]
network: {config: disabled}
# A small image: no locales to generate, no SSH server to key.
locale: C.UTF-8
ssh_genkeytypes: []
"""
# cloud-init's four boot stages, as an image's init system runs them: each one runs even
# when an earlier one reported a failing module.
FIRST_BOOT = (
    "cloud-init init --local; cloud-init init; "
    "cloud-init modules --mode config; cloud-init modules --mode final"
)


def hosts_dir(state: Path) -> Path:
    return state / "data" / "hosts"


def bridge_name(network_id: str) -> str:
    return "gdlq" + naming.short_hash("rig", network_id, length=10)


def cloud_tag(state: Path) -> str:
    return host.cloud_tag("rig", state)


@contextlib.contextmanager
def _locked(state: Path):
    """The driver's lock over bridges.json and the bridges.

    nova-compute runs spawns as eventlet green threads of one OS thread, and the holder
    yields inside (``ip`` runs as a green subprocess). A blocking flock in a second green
    thread would then stop the whole process, holder and RPC included, for good; so the
    lock is polled, and the wait (time.sleep, green under Nova) lets the holder go on.
    """
    directory = hosts_dir(state)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                time.sleep(0.05)
        yield


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


def ensure_bridge(state: Path, network_id: str, gateway: str) -> str:
    """The bridge standing for a Neutron network, with the gateway address, up."""
    bridge = bridge_name(network_id)
    with _locked(state):
        record_path = hosts_dir(state) / "bridges.json"
        bridges = network.read_json(record_path) or {}
        if bridge not in bridges:
            bridges[bridge] = network_id
            network.write_json(record_path, bridges)  # recorded first: cleanup finds it
        if not network.link_exists(bridge):
            _ip("link", "add", bridge, "type", "bridge")
        current = network.bridge_cidr(bridge)
        if current != ipaddress.ip_interface(gateway):
            _ip("addr", "replace", gateway, "dev", bridge)
        _ip("link", "set", bridge, "up")
    return bridge


class InstanceHost:
    """One instance's local host: its record, its kernel objects, its PID 1."""

    def __init__(self, state: Path, uuid: str) -> None:
        self.state = state
        self.uuid = uuid
        self.dir = hosts_dir(state) / uuid
        self.record_path = self.dir / "host.json"

    @property
    def record(self) -> dict | None:
        return network.read_json(self.record_path)

    def names(self, record: dict) -> host.HostNames:
        return host.HostNames.of(cloud_tag(self.state), record["hostname"] + "-" + self.uuid[:8])

    def alive(self) -> bool:
        record = self.record
        return bool(record) and host.is_alive(record.get("pid"), record.get("starttime"))

    def create(
        self,
        hostname: str,
        vif: dict,
        user_data: str,
        memory_mb: int,
        vcpus: int,
        disk_gb: int,
        salt_venv: str,
    ) -> None:
        """Record, plumb and boot the host (a record comes first: delete finds what is made)."""
        record = {
            "uuid": self.uuid,
            "hostname": hostname,
            "mac": vif["mac"],
            "address": vif["address"],
            "bridge": vif["bridge"],
            "user_data": user_data,
            "memory_mb": memory_mb,
            "vcpus": vcpus,
            "disk_gb": disk_gb,
            "salt_venv": salt_venv,
            "pid": None,
            "starttime": None,
        }
        network.write_json(self.record_path, record)
        self.dir.chmod(0o700)  # the record holds user data, with the minion's key
        self.boot()

    def boot(self) -> None:
        """Start the host from its record: a fresh disk, cloud-init from the seed."""
        record = self.record
        if record is None:
            raise RuntimeError(f"no host record for instance {self.uuid}")
        if host.is_alive(record.get("pid"), record.get("starttime")):
            return
        names = self.names(record)
        host.unplumb(names)
        errors = host.plumb([names], record["bridge"], {names.netns: record["mac"]})
        if errors:
            raise RuntimeError(next(iter(errors.values())))
        stage = self.dir / "root"
        host.remove_tree(stage)
        stage.mkdir(parents=True)
        venv = record["salt_venv"]
        needed = [os.path.realpath(p) for p in (venv, f"{venv}/bin/python3")]
        needed.append(str(CHECKOUT))
        hidden = (*FRESH_DIRS, "/var/lib/cloud", "/opt/gdl", str(self.state))
        cgroups = host.make_cgroups(names, record["memory_mb"] * 1024**2, record["vcpus"])
        meta_data = f"instance-id: {self.uuid}\nlocal-hostname: {record['hostname']}\n"
        description = {
            "hostname": record["hostname"],
            "netns": str(names.netns_path),
            "stage_dir": str(stage),
            "disk_bytes": max(record["disk_gb"], 1) * 1024**3,
            "fresh_dirs": fresh_dirs(hidden, needed),
            "machine_dirs": machine_dirs(needed),
            "cgroups": cgroups,
            "interfaces": {"eth0": record["address"]},
            "files": {
                "/etc/hostname": {"text": record["hostname"] + "\n"},
                "/etc/hosts": {
                    "text": f"127.0.0.1\tlocalhost\n{record['address'].split('/')[0]}"
                    f"\t{record['hostname']}\n"
                },
                "/etc/resolv.conf": {
                    "text": "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n"
                },
                "/etc/cloud/cloud.cfg.d/90-gdl-rig.cfg": {"text": CLOUD_CFG},
                "/var/lib/cloud/seed/nocloud/meta-data": {"text": meta_data},
                "/var/lib/cloud/seed/nocloud/user-data": {
                    "text": record["user_data"],
                    "mode": "600",
                },
                IMAGE_SALT_PREFIX: {"symlink": venv},
            },
            "services": [
                {
                    "argv": ["/bin/sh", "-c", FIRST_BOOT],
                    "log": "/var/log/cloud-init-output.log",
                    "once": True,
                }
            ],
            "python": sys.executable,
        }
        answer = host.boot([description])[0]
        if isinstance(answer, str):
            host.unplumb(names)
            raise RuntimeError(answer)
        record.update(pid=answer[0], starttime=answer[1], cgroups=cgroups)
        network.write_json(self.record_path, record)

    def stop(self) -> None:
        """Power off: end every process of the host; its record stays for power on."""
        record = self.record
        if record is None:
            return
        host.kill(record.get("pid"), record.get("starttime"))
        names = self.names(record)
        host.unplumb(names)
        host.remove_cgroups(names)
        host.remove_tree(self.dir / "root")

    def delete(self) -> None:
        record = self.record
        if record is not None:
            self.stop()
        host.remove_tree(self.dir)


def all_hosts(state: Path) -> list[InstanceHost]:
    directory = hosts_dir(state)
    if not directory.is_dir():
        return []
    return [InstanceHost(state, d.name) for d in sorted(directory.iterdir()) if d.is_dir()]


def cleanup(state: Path) -> None:
    """Remove every host and bridge the driver made (the rig is going down)."""
    for instance in all_hosts(state):
        instance.delete()
    bridges = network.read_json(hosts_dir(state) / "bridges.json") or {}
    for bridge in bridges:
        if network.link_exists(bridge):
            _ip("link", "del", bridge)
    (hosts_dir(state) / "bridges.json").unlink(missing_ok=True)


# --- Nova --------------------------------------------------------------------------------
# Only when nova-compute loads this module (as nova.virt.gdl_hosts): the command line and
# the functions above need no Nova.
if __name__.startswith("nova."):
    from nova import exception
    from nova.compute import power_state
    from nova.virt import fake, hardware
    from oslo_config import cfg
    from oslo_log import log as logging

    LOG = logging.getLogger(__name__)
    CONF = cfg.CONF

    def _vif(state: Path, vif) -> dict:
        """The one thing a host needs from a Neutron VIF: MAC, address, bridge."""
        subnets = [s for s in vif["network"]["subnets"] if s["version"] == 4 and s["ips"]]
        if not subnets:
            raise exception.InstanceDeployFailure(
                reason=f"port {vif['id']} has no IPv4 address on the rig"
            )
        subnet = subnets[0]
        prefix = ipaddress.ip_network(subnet["cidr"]).prefixlen
        gateway = subnet["gateway"]["address"]
        if not gateway:
            raise exception.InstanceDeployFailure(
                reason=f"subnet {subnet['cidr']} has no gateway for the rig's bridge"
            )
        bridge = ensure_bridge(state, vif["network"]["id"], f"{gateway}/{prefix}")
        return {
            "mac": vif["address"],
            "address": f"{subnet['ips'][0]['address']}/{prefix}",
            "bridge": bridge,
        }

    class LocalHostDriver(fake.FakeDriver):
        """Nova's fake driver whose instances are local hosts that boot."""

        def __init__(self, virtapi, read_only=False):
            super().__init__(virtapi, read_only)
            self.state = Path(CONF.state_path).parent.parent
            self.salt_venv = os.environ.get("GDL_RIG_SALT_VENV", "/opt/gdl/venv")

        def init_host(self, host):
            super().init_host(host)
            # Hosts outlive nova-compute: know the running ones again after a restart.
            for instance in all_hosts(self.state):
                record = instance.record or {}
                state = power_state.RUNNING if instance.alive() else power_state.SHUTDOWN
                name = record.get("hostname", instance.uuid)
                self.instances[instance.uuid] = fake.FakeInstance(name, state, instance.uuid)

        def spawn(
            self,
            context,
            instance,
            image_meta,
            injected_files,
            admin_password,
            allocations,
            network_info=None,
            block_device_info=None,
            power_on=True,
            accel_info=None,
        ):
            vifs = list(network_info or [])
            if len(vifs) != 1:
                raise exception.InstanceDeployFailure(
                    reason=f"the rig boots instances with one port, not {len(vifs)}"
                )
            vif = _vif(self.state, vifs[0])
            super().spawn(
                context,
                instance,
                image_meta,
                injected_files,
                admin_password,
                allocations,
                network_info,
                block_device_info,
                power_on,
                accel_info,
            )
            user_data = ""
            if instance.user_data:
                user_data = base64.b64decode(instance.user_data).decode()
            flavor = instance.flavor
            target = InstanceHost(self.state, instance.uuid)
            try:
                target.create(
                    instance.hostname or instance.uuid,
                    vif,
                    user_data,
                    flavor.memory_mb,
                    flavor.vcpus,
                    flavor.root_gb,
                    self.salt_venv,
                )
                if not power_on:
                    target.stop()
            except Exception as error:
                LOG.error("instance %s did not boot: %s", instance.uuid, error)
                target.delete()
                raise exception.InstanceDeployFailure(reason=str(error)) from error
            LOG.info("instance %s is local host %s", instance.uuid, vif["address"])

        def destroy(
            self,
            context,
            instance,
            network_info,
            block_device_info=None,
            destroy_disks=True,
            destroy_secrets=True,
        ):
            InstanceHost(self.state, instance.uuid).delete()
            super().destroy(
                context, instance, network_info, block_device_info, destroy_disks, destroy_secrets
            )

        def power_off(self, instance, timeout=0, retry_interval=0):
            super().power_off(instance, timeout, retry_interval)
            InstanceHost(self.state, instance.uuid).stop()

        def power_on(
            self, context, instance, network_info, block_device_info=None, accel_info=None
        ):
            super().power_on(context, instance, network_info, block_device_info, accel_info)
            InstanceHost(self.state, instance.uuid).boot()

        def reboot(
            self,
            context,
            instance,
            network_info,
            reboot_type,
            block_device_info=None,
            bad_volumes_callback=None,
            accel_info=None,
        ):
            target = InstanceHost(self.state, instance.uuid)
            target.stop()
            target.boot()
            if instance.uuid in self.instances:
                self.instances[instance.uuid].state = power_state.RUNNING

        def get_info(self, instance, use_cache=True):
            info = super().get_info(instance, use_cache)
            if (
                info.state == power_state.RUNNING
                and not InstanceHost(self.state, instance.uuid).alive()
            ):
                # The host died under Nova (killed, out of memory): say so.
                self.instances[instance.uuid].state = power_state.SHUTDOWN
                return hardware.InstanceInfo(state=power_state.SHUTDOWN)
            return info


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__.split("::", 1)[1], file=sys.stderr)
        return 2
    command, state = argv[0], Path(argv[1])
    if command == "ensure-bridge" and len(argv) == 4:
        print(ensure_bridge(state, argv[2], argv[3]))
    elif command == "list":
        for instance in all_hosts(state):
            record = instance.record or {}
            status = "running" if instance.alive() else "stopped"
            print(instance.uuid, record.get("hostname"), record.get("address"), status)
    elif command == "cleanup":
        cleanup(state)
    else:
        print(f"unknown command {command!r}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
