"""The rig's Nova compute driver: instances that boot, as gdl local hosts.

Nova's fake driver marks servers ACTIVE without running anything. This one
builds on it and makes each instance a local host of the kind gdl's local
provider makes (network, mount, PID, UTS and IPC namespaces over a private
overlay of the machine's filesystem), plugged into Neutron the way libvirt
plugs a guest on a Linux bridge cloud:

- per port, a veth pair: ``tap`` + the port id's first 11 characters in the
  rig's cloud namespace, on the network's bridge there (made if missing, as
  os-vif does), where Neutron's Linux bridge agent applies the port's
  security groups and anti-spoofing rules; and the instance's ``eth0`` with
  the port's MAC and the network's MTU;
- the instance starts once Neutron says the port is wired
  (``network-vif-plugged``), then takes its address by DHCP from Neutron's
  dnsmasq, and Debian's real cloud-init reads its user data and metadata from
  ``http://169.254.169.254`` (Neutron's metadata proxy, then Nova's metadata
  API), or from a config drive when the server asks for one;
- two images: the rig's own has Salt installed (``/opt/gdl/salt`` is the
  virtualenv the rig was started with, so gdl's user data finds Salt and
  installs nothing); an image with the property ``gdl_rig_salt=none`` is a
  plain one, whose ``/opt/gdl`` starts empty, so first boot installs the
  minion from what it reaches, as on a real cloud;
- the instance's console is what its boot prints (``/var/log/console.log``
  inside it), and Nova's console log shows its end while it runs;
- power off, power on, reboot and delete act on the host; ``get_info``
  reports the host's own state, so a host that died shows as shut down.

Disks are ephemeral: a host's writes live in its memory, so a reboot is a
fresh first boot (gdl's user data is written to run again safely). A server
booted from a volume (the rig's Cinder backend, virt/gdl_volumes.py) is the
same host: Nova makes the volume from the image and attaches it (the fake
driver's volume connector; attachments are its bookkeeping), the host
records the volume's file as its root and takes the volume's size as its
disk's, and the image's properties (Nova keeps them for the volume) choose
Salt or plain as for an image boot; the host does not read or write the file.

Nova loads this as ``compute_driver = gdl_hosts.LocalHostDriver``; the rig's
``libexec/service`` puts this directory on ``nova.virt``'s package path. The
same file is the rig's command line for what outlives nova-compute::

    gdl_hosts.py list STATE
    gdl_hosts.py cleanup STATE      # every host and its tap, by recorded PID
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[4]
if str(CHECKOUT) not in sys.path:
    sys.path.insert(0, str(CHECKOUT))

from gdl.providers.local import host, network  # noqa: E402 - the checkout's gdl
from gdl.providers.local.boot import FRESH_DIRS, fresh_dirs, machine_dirs  # noqa: E402

IMAGE_SALT_PREFIX = "/opt/gdl/salt"
# The image property (seen by Nova as the instance's system metadata ``image_<name>``)
# whose value ``none`` marks an image without Salt.
IMAGE_SALT_PROPERTY = "gdl_rig_salt"
PLAIN_IMAGE_SALT = "none"
# What the instance's boot prints, as a serial console would show it (cloud-init's own
# output log is a copy of part of it: writing both to one file would double its lines).
CONSOLE_LOG = "/var/log/console.log"
CONSOLE_BYTES = 100 * 1024  # as much as Nova's libvirt driver keeps of a console
# The namespace holding the cloud's bridges and agents (the rig passes its name).
DEFAULT_CLOUD_NETNS = "gdl-rig-cloud"
CLOUD_CFG = """\
# The rig's image: a config drive when there is one, else the metadata service. eth0 takes
# its address by DHCP at boot, as the image's own network configuration says.
datasource_list: [ConfigDrive, OpenStack, None]
# A busy cloud's metadata service can take longer than cloud-init's single 10 s try to
# answer its first request: keep asking for up to 3 minutes, as slow clouds' images do.
datasource:
  OpenStack:
    max_wait: 180
    timeout: 30
    retries: 5
network: {config: disabled}
# A small image: no locales to generate, no SSH server to key.
locale: C.UTF-8
ssh_genkeytypes: []
"""
# The image's boot: cloud-init's local stage, the network (eth0 by DHCP; dhclient stays to
# renew the lease), then cloud-init's network, config and final stages. Each stage runs
# even when an earlier one reported a failing module.
FIRST_BOOT = (
    "cloud-init init --local; dhclient -4 eth0; cloud-init init; "
    "cloud-init modules --mode config; cloud-init modules --mode final"
)
CONFIG_DRIVE_SEED = "/var/lib/cloud/seed/config_drive"


def hosts_dir(state: Path) -> Path:
    return state / "data" / "hosts"


def cloud_tag(state: Path) -> str:
    return host.cloud_tag("rig", state)


def cloud_netns() -> str:
    return os.environ.get("GDL_RIG_CLOUD_NETNS", DEFAULT_CLOUD_NETNS)


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


def plug(netns: str, tap: str, mac: str, mtu: int, bridge: str) -> None:
    """The instance's network namespace and its port's veth pair: ``tap`` in the cloud.

    The namespace is made from the machine (``ip -n`` runs in a mount namespace of its
    own, where a new namespace's mount would stay); the pair from inside the cloud, its
    tap on the network's bridge, as libvirt puts a guest's tap on the bridge os-vif made.
    """
    _ip("netns", "add", netns)
    cloud = cloud_netns()
    found = subprocess.run(
        ["ip", "-n", cloud, "link", "show", bridge], capture_output=True, check=False
    )
    if found.returncode != 0:
        _ip("-n", cloud, "link", "add", bridge, "type", "bridge", "forward_delay", "0")
        _ip("-n", cloud, "link", "set", bridge, "up")
    _ip(
        "-n",
        cloud,
        "link",
        "add",
        tap,
        "mtu",
        str(mtu),
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "address",
        mac,
        "mtu",
        str(mtu),
        "netns",
        netns,
    )
    _ip("-n", cloud, "link", "set", tap, "master", bridge, "up")


def unplug(netns: str, tap: str | None) -> None:
    """Remove the tap (the agent then unwires the port) and the namespace; gone is fine."""
    if tap:
        subprocess.run(
            ["ip", "-n", cloud_netns(), "link", "del", tap], capture_output=True, check=False
        )
    if (host.NETNS_DIR / netns).exists():
        _ip("netns", "del", netns)


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
        memory_mb: int,
        vcpus: int,
        disk_gb: int,
        salt_venv: str | None,
        config_drive: dict[str, bytes] | None = None,
        boot_volume: dict | None = None,
    ) -> None:
        """Record the host (a record comes first: delete finds what is made).

        ``salt_venv`` is what the image has at /opt/gdl/salt; None for a plain image.
        ``boot_volume`` is the root volume's id and file when it boots from one.
        """
        record = {
            "uuid": self.uuid,
            "hostname": hostname,
            "mac": vif["mac"],
            "tap": vif["tap"],
            "mtu": vif["mtu"],
            "bridge": vif["bridge"],
            "memory_mb": memory_mb,
            "vcpus": vcpus,
            "disk_gb": disk_gb,
            "salt_venv": salt_venv,
            "config_drive": bool(config_drive),
            "boot_volume": boot_volume,
            "pid": None,
            "starttime": None,
        }
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)  # a config drive holds user data, with the minion's key
        network.write_json(self.record_path, record)
        for path, data in (config_drive or {}).items():
            target = self.dir / "config_drive" / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)

    def plug(self) -> None:
        """The host's port, plugged into the cloud: a fresh network namespace and tap."""
        record = self.record
        if record is None:
            raise RuntimeError(f"no host record for instance {self.uuid}")
        names = self.names(record)
        unplug(names.netns, record["tap"])
        plug(names.netns, record["tap"], record["mac"], record["mtu"], record["bridge"])

    def _config_drive_files(self) -> dict[str, dict]:
        drive = self.dir / "config_drive"
        if not drive.is_dir():
            return {}
        return {
            f"{CONFIG_DRIVE_SEED}/{path.relative_to(drive)}": {
                "text": path.read_text(errors="replace"),
                "mode": "600",
            }
            for path in sorted(drive.rglob("*"))
            if path.is_file()
        }

    def boot(self) -> None:
        """Start the host from its record: a fresh disk; cloud-init at first boot.

        Plugs the port first unless it is plugged already (``spawn`` plugs it and waits for
        Neutron before booting).
        """
        record = self.record
        if record is None:
            raise RuntimeError(f"no host record for instance {self.uuid}")
        if host.is_alive(record.get("pid"), record.get("starttime")):
            return
        names = self.names(record)
        if not names.netns_path.exists():
            self.plug()
        stage = self.dir / "root"
        host.remove_tree(stage)
        stage.mkdir(parents=True)
        venv = record["salt_venv"]
        needed, salt = [], {}
        if venv:  # the image has Salt: the rig's virtualenv, and the checkout it runs from
            needed = [os.path.realpath(p) for p in (venv, f"{venv}/bin/python3")]
            needed.append(str(CHECKOUT))
            salt = {IMAGE_SALT_PREFIX: {"symlink": venv}}
        hidden = (*FRESH_DIRS, "/var/lib/cloud", "/var/lib/dhcp", "/opt/gdl", str(self.state))
        cgroups = host.make_cgroups(names, record["memory_mb"] * 1024**2, record["vcpus"])
        description = {
            "hostname": record["hostname"],
            "netns": str(names.netns_path),
            "stage_dir": str(stage),
            "disk_bytes": max(record["disk_gb"], 1) * 1024**3,
            "fresh_dirs": fresh_dirs(hidden, needed),
            "machine_dirs": machine_dirs(needed),
            "cgroups": cgroups,
            "interfaces": {"eth0": None},  # up, addressed by DHCP at boot
            "files": {
                "/etc/hostname": {"text": record["hostname"] + "\n"},
                "/etc/hosts": {"text": f"127.0.0.1\tlocalhost\n127.0.1.1\t{record['hostname']}\n"},
                # Until DHCP names Neutron's dnsmasq: fail fast, never hang.
                "/etc/resolv.conf": {
                    "text": "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n"
                },
                "/etc/cloud/cloud.cfg.d/90-gdl-rig.cfg": {"text": CLOUD_CFG},
                **self._config_drive_files(),
                **salt,
            },
            "services": [
                {
                    "argv": ["/bin/sh", "-c", FIRST_BOOT],
                    "log": CONSOLE_LOG,
                    "once": True,
                }
            ],
            "python": sys.executable,
            # cloud-init recognises OpenStack by this in PID 1's environment when the
            # machine's DMI says nothing (Nova's libvirt driver gives its LXC guests'
            # init the same variable).
            "init_environment": {"product_name": "OpenStack Nova"},
        }
        answer = host.boot([description])[0]
        if isinstance(answer, str):
            unplug(names.netns, record["tap"])
            raise RuntimeError(answer)
        record.update(pid=answer[0], starttime=answer[1], cgroups=cgroups)
        network.write_json(self.record_path, record)

    def console(self) -> bytes:
        """The end of the running host's console; nothing when it does not run."""
        record = self.record
        if not record or not self.alive():
            return b""
        try:
            lines = host.read_tail(int(record["pid"]), CONSOLE_LOG, 10_000, CONSOLE_BYTES)
        except OSError:
            return b""  # not written yet, or the host went away meanwhile
        return "".join(f"{line}\n" for line in lines).encode()

    def stop(self) -> None:
        """Power off: end every process of the host; its record stays for power on."""
        record = self.record
        if record is None:
            return
        host.kill(record.get("pid"), record.get("starttime"))
        names = self.names(record)
        unplug(names.netns, record.get("tap"))
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
    """Remove every host and tap the driver made (the rig is going down)."""
    for instance in all_hosts(state):
        instance.delete()


# --- Nova --------------------------------------------------------------------------------
# Only when nova-compute loads this module (as nova.virt.gdl_hosts): the command line and
# the functions above need no Nova.
if __name__.startswith("nova."):
    import eventlet
    from nova import exception
    from nova.api.metadata import base as instance_metadata
    from nova.compute import power_state
    from nova.virt import configdrive, driver, fake, hardware
    from oslo_config import cfg
    from oslo_log import log as logging

    LOG = logging.getLogger(__name__)
    CONF = cfg.CONF

    def _vif(vif) -> dict:
        """What a host needs from a Neutron VIF: its tap's name and bridge, MAC and MTU."""
        return {
            "tap": vif["devname"],  # "tap" + the port id's first 11 characters
            "bridge": vif["network"]["bridge"],  # "brq" + the network id's first 11
            "mac": vif["address"],
            "mtu": vif["network"]["meta"].get("mtu") or 1500,
        }

    def _image_salt_venv(instance, rig_venv: str) -> str | None:
        """What the instance's image has at /opt/gdl/salt: the rig's venv, or None (plain)."""
        system_metadata = instance.system_metadata or {}
        if system_metadata.get(f"image_{IMAGE_SALT_PROPERTY}") == PLAIN_IMAGE_SALT:
            return None
        return rig_venv

    def _config_drive(context, instance, injected_files, admin_password, network_info):
        """The config drive's files by path, when the server asks for one (else None)."""
        if not configdrive.required_by(instance):
            return None
        extra_md = {"admin_pass": admin_password} if admin_password else {}
        metadata = instance_metadata.InstanceMetadata(
            instance,
            content=injected_files,
            extra_md=extra_md,
            network_info=network_info,
            request_context=context,
        )
        return {
            path: data if isinstance(data, bytes) else data.encode()
            for path, data in metadata.metadata_for_config_drive()
        }

    def _boot_volume(block_device_info) -> dict | None:
        """The root volume (id, file, size in GiB) a server boots from; None for an image.

        Nova has made it from the image and attached it by now: its connection is the
        rig backend's, a ``local`` one whose device is the volume's file on this machine.
        """
        for bdm in driver.block_device_info_get_mapping(block_device_info):
            if bdm.get("boot_index") != 0:
                continue
            connection = bdm.get("connection_info") or {}
            path = (connection.get("data") or {}).get("device_path")
            if connection.get("driver_volume_type") != "local" or not path:
                raise exception.InstanceDeployFailure(
                    reason="the rig boots from its own volumes only (local, with a device path)"
                )
            size_gb = os.path.getsize(path) // 1024**3
            return {"id": connection.get("serial"), "path": path, "size_gb": size_gb}
        return None

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

        def _vif_failed(self, event_name, instance):
            LOG.error("Neutron failed %s for instance %s", event_name, instance.uuid)
            if CONF.vif_plugging_is_fatal:
                raise exception.VirtualInterfaceCreateException()

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
            vif = _vif(vifs[0])
            boot_volume = _boot_volume(block_device_info)
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
            flavor = instance.flavor
            disk_gb = boot_volume["size_gb"] if boot_volume else flavor.root_gb
            target = InstanceHost(self.state, instance.uuid)
            # As libvirt does: plug, wait until Neutron's agent has wired the port, start.
            events = [
                ("network-vif-plugged", v["id"]) for v in vifs if v.get("active", True) is False
            ]
            try:
                target.create(
                    instance.hostname or instance.uuid,
                    vif,
                    flavor.memory_mb,
                    flavor.vcpus,
                    disk_gb,
                    _image_salt_venv(instance, self.salt_venv),
                    _config_drive(context, instance, injected_files, admin_password, network_info),
                    boot_volume,
                )
                try:
                    with self.virtapi.wait_for_instance_event(
                        instance,
                        events,
                        deadline=CONF.vif_plugging_timeout,
                        error_callback=self._vif_failed,
                    ):
                        target.plug()
                except eventlet.timeout.Timeout:
                    if CONF.vif_plugging_is_fatal:
                        raise exception.VirtualInterfaceCreateException() from None
                if power_on:
                    target.boot()
                else:
                    target.stop()
            except Exception as error:
                LOG.error("instance %s did not boot: %s", instance.uuid, error)
                target.delete()
                if isinstance(error, exception.NovaException):
                    raise
                raise exception.InstanceDeployFailure(reason=str(error)) from error
            LOG.info("instance %s is local host on %s", instance.uuid, vif["tap"])

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

        def get_console_output(self, context, instance):
            return InstanceHost(self.state, instance.uuid).console()

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
    if command == "list":
        for instance in all_hosts(state):
            record = instance.record or {}
            status = "running" if instance.alive() else "stopped"
            print(instance.uuid, record.get("hostname"), record.get("tap"), status)
    elif command == "cleanup":
        cleanup(state)
    else:
        print(f"unknown command {command!r}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
