"""What a server boots from: the image, the flavor's disk or a boot volume.

Plain functions over what the cloud returned, so that choosing an image and checking a
flavor's disk need no cloud to be tested.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from gdl.errors import ConfigError
from gdl.providers.openstack.settings import OpenStackSettings

GIB = 1024**3


def newest_active(images: Iterable[Any]) -> Any | None:
    """Of images sharing one name, the newest active one (clouds keep old uploads)."""
    active = [i for i in images if i.status == "active"]
    if not active:
        return None
    return max(active, key=lambda i: (i.created_at or "", i.id))


def image_disk_gib(image: Any) -> int:
    """The smallest disk the image boots on: its ``min_disk``, else its size, in GiB."""
    size = math.ceil((image.size or 0) / GIB)
    return max(image.min_disk or 0, size, 1)


def volume_size(cfg: OpenStackSettings, image: Any, flavor: Any) -> int:
    """The boot volume's size in GiB: ``volume_size``, else what image and flavor need."""
    if cfg.volume_size is not None:
        return cfg.volume_size
    return max(image_disk_gib(image), flavor.disk or 0)


def check_disk(cfg: OpenStackSettings, image: Any, flavor: Any) -> None:
    """Refuse an image and flavor that cannot boot together, before anything is made."""
    image_label = image.name or image.id
    if cfg.boot_from_volume:
        need = image.min_disk or 0
        if cfg.volume_size is not None and cfg.volume_size < need:
            raise ConfigError(
                f"gdl:openstack:volume_size {cfg.volume_size} GiB is below image "
                f"{image_label!r}'s min_disk of {need} GiB",
                f"set volume_size to at least {need}, or leave it out",
            )
        return
    if not flavor.disk:
        raise ConfigError(
            f"flavor {flavor.name!r} has no disk (disk 0): its servers must boot from a volume",
            "set gdl:openstack:boot_from_volume: true, or map the size to a flavor with a disk",
        )
    if (image.min_disk or 0) > flavor.disk:
        raise ConfigError(
            f"image {image_label!r} needs a {image.min_disk} GiB disk "
            f"and flavor {flavor.name!r} has {flavor.disk} GiB",
            "map the size to a bigger flavor, or set gdl:openstack:boot_from_volume: true",
        )


def boot_options(
    cfg: OpenStackSettings, image: Any, flavor: Any, key_name: str | None
) -> dict[str, Any]:
    """``create_server`` arguments for what the server boots from and who may log in."""
    options: dict[str, Any] = {"flavor_id": flavor.id}
    if cfg.boot_from_volume:
        # The image copied to a new volume, deleted with the server.
        options["block_device_mapping"] = [
            {
                "boot_index": 0,
                "uuid": image.id,
                "source_type": "image",
                "destination_type": "volume",
                "volume_size": volume_size(cfg, image, flavor),
                "delete_on_termination": True,
            }
        ]
    else:
        options["image_id"] = image.id
    if key_name:
        options["key_name"] = key_name
    if cfg.availability_zone:
        options["availability_zone"] = cfg.availability_zone
    return options
