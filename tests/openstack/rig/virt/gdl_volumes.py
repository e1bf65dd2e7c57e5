"""The rig's Cinder volume driver: each volume a sparse file in the rig's state.

What a volume is on the rig:

- a sparse file ``volume-<id>`` in Cinder's state directory (``data/cinder/volumes``)
  whose length is the volume's size, so Cinder, Nova and the operator see the size asked
  for while the machine's disk holds only what was written;
- made from an image, it holds the image's bytes as Glance serves them (raw images only:
  the rig has no qemu-img to convert others), written at its start as a backend that
  reads Glance's store itself does (``clone_image``), and is bootable with the image's
  properties, as on any cloud;
- attached through a ``local`` connection whose ``device_path`` is the file: the rig's
  Nova driver (virt/gdl_hosts.py) records it as the instance's root and sizes the
  instance's disk by it.

What it is not: the instance's root filesystem. Instances boot as local hosts over an
overlay of the machine's filesystem whatever they boot from; nothing reads the file back,
and what an instance writes does not land in it. Snapshots, backups, copying a volume
to an image, encryption and multi-attach are not supported.

Cinder loads this as ``volume_driver = gdl_volumes.FileVolumeDriver``: the rig's
``libexec/service`` puts this directory on cinder-volume's module path. The same file
is the rig's command line for a look at the backend::

    gdl_volumes.py list STATE      # each volume file: its name, size and bytes held
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path

GIB = 1024**3
# What the backend reports as its size to the scheduler: files are sparse, so this is a
# ceiling on what volumes may add up to, not space taken.
CAPACITY_GB = 1000


def volumes_dir(state: Path) -> Path:
    """Where the volume files are: Cinder's state directory under the rig's state."""
    return state / "data" / "cinder" / "volumes"


def make_file(path: Path, size_gb: int) -> None:
    """A new sparse file of ``size_gb`` GiB; none may exist at ``path``."""
    with path.open("xb") as volume:
        volume.truncate(size_gb * GIB)


def fill_from(path: Path, chunks: Iterable[bytes]) -> int:
    """Write ``chunks`` at the start of the volume file; refuse more than it holds."""
    limit = path.stat().st_size
    written = 0
    with path.open("r+b") as volume:
        for chunk in chunks:
            written += len(chunk)
            if written > limit:
                raise ValueError(f"the image is larger than the volume's {limit} bytes")
            volume.write(chunk)
    return written


def copy_sparse(source: Path, target: Path) -> None:
    """Copy the data of ``source`` into ``target`` at the same offsets, its holes left holes."""
    with source.open("rb") as src, target.open("r+b") as dst:
        fd, offset, end = src.fileno(), 0, source.stat().st_size
        while offset < end:
            try:
                data = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError:  # ENXIO: nothing but a hole up to the end
                return
            hole = os.lseek(fd, data, os.SEEK_HOLE)
            src.seek(data)
            dst.seek(data)
            while src.tell() < hole:
                dst.write(src.read(min(hole - src.tell(), 1024**2)))
            offset = hole


def volume_files(state: Path) -> list[Path]:
    directory = volumes_dir(state)
    if not directory.is_dir():
        return []
    return sorted(directory.glob("volume-*"))


# --- Cinder --------------------------------------------------------------------------------
# Only inside cinder-volume, which has imported cinder before it loads its driver: the
# command line and the functions above need no Cinder.
if "cinder" in sys.modules:
    from cinder import exception
    from cinder.common import constants
    from cinder.volume import driver
    from oslo_config import cfg
    from oslo_log import log as logging

    LOG = logging.getLogger(__name__)
    CONF = cfg.CONF

    class FileVolumeDriver(driver.BaseVD):
        """Volumes as sparse files, attached as ``local`` connections to their path."""

        VERSION = "1.0.0"

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            # state_path is the rig's data/cinder: the volumes live beside Cinder's state.
            self.volumes = Path(CONF.state_path) / "volumes"

        def path(self, volume) -> Path:
            return self.volumes / f"volume-{volume.id}"

        def do_setup(self, context):
            self.volumes.mkdir(parents=True, exist_ok=True)

        def check_for_setup_error(self):
            if not os.access(self.volumes, os.W_OK):
                raise exception.VolumeBackendAPIException(
                    data=f"cannot write volume files in {self.volumes}"
                )

        def _model(self, volume) -> dict:
            return {"provider_location": str(self.path(volume))}

        def create_volume(self, volume):
            make_file(self.path(volume), volume.size)
            return self._model(volume)

        def clone_image(self, context, volume, image_location, image_meta, image_service):
            """The image's bytes from Glance into a new volume file."""
            if image_meta.get("disk_format") != "raw":
                raise exception.ImageUnacceptable(
                    image_id=image_meta["id"],
                    reason="the rig's volumes take raw images only",
                )
            path = self.path(volume)
            make_file(path, volume.size)
            try:
                chunks = image_service.download(context, image_meta["id"])
                written = fill_from(path, chunks)
            except Exception:
                path.unlink(missing_ok=True)
                raise
            LOG.info("volume %s holds image %s (%d bytes)", volume.id, image_meta["id"], written)
            return self._model(volume), True

        def create_cloned_volume(self, volume, src_vref):
            make_file(self.path(volume), volume.size)
            copy_sparse(self.path(src_vref), self.path(volume))
            return self._model(volume)

        def delete_volume(self, volume):
            self.path(volume).unlink(missing_ok=True)

        def extend_volume(self, volume, new_size):
            os.truncate(self.path(volume), new_size * GIB)

        # Nothing to export: the file is the device, and the instance is on this machine.
        def create_export(self, context, volume, connector):
            return None

        def ensure_export(self, context, volume):
            return None

        def remove_export(self, context, volume):
            return None

        def initialize_connection(self, volume, connector):
            return {
                "driver_volume_type": "local",
                "data": {"device_path": str(self.path(volume))},
            }

        def terminate_connection(self, volume, connector, **kwargs):
            return None

        def _update_volume_stats(self):
            allocated = sum(p.stat().st_size for p in self.volumes.glob("volume-*")) // GIB
            self._stats = {
                "volume_backend_name": self.configuration.safe_get("volume_backend_name") or "rig",
                "vendor_name": "gdl",
                "driver_version": self.VERSION,
                "storage_protocol": constants.FILE,
                "total_capacity_gb": CAPACITY_GB,
                "free_capacity_gb": max(CAPACITY_GB - allocated, 0),
                "provisioned_capacity_gb": allocated,
                "reserved_percentage": 0,
                "thin_provisioning_support": True,
                "thick_provisioning_support": False,
                "max_over_subscription_ratio": 1.0,
                "multiattach": False,
                "QoS_support": False,
            }


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "list":
        print(__doc__.split("::", 1)[1], file=sys.stderr)
        return 2
    for path in volume_files(Path(argv[1])):
        stat = path.stat()
        print(path.name, f"{stat.st_size // GIB} GiB", f"{stat.st_blocks * 512} bytes held")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
