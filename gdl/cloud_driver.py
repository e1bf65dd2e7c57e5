"""What gdl's salt-cloud drivers (``_clouds/gdl_*.py``) share.

Plain functions over salt-cloud's ``vm_`` and options, so each driver stays a thin
adapter over its provider and both read profiles the same way.
"""

from __future__ import annotations

from typing import Any

import salt.config
from salt.exceptions import SaltCloudSystemExit

from gdl import keys, naming


def server_identity(vm_: dict[str, Any], opts: dict[str, Any]) -> tuple[str, str, str]:
    """(app, env, role) of the server salt-cloud is making.

    From the profile (or the caller's overrides) first, else from the server name
    ``<role>-<index>-<app>-<env>``.
    """
    name = vm_["name"]
    parsed = naming.parse_server_name(name)
    value = {}
    for key in ("app", "env", "role"):
        given = salt.config.get_cloud_config_value(key, vm_, opts, default=None)
        value[key] = given or (getattr(parsed, key) if parsed else None)
    missing = [key for key, given in value.items() if not given]
    if missing:
        raise SaltCloudSystemExit(
            f"{name}: no {', '.join(missing)}: name the server <role>-<index>-<app>-<env> "
            "or set them in the profile"
        )
    return value["app"], value["env"], value["role"]


def minion_pair(pki_dir: str, vm_: dict[str, Any]) -> keys.KeyPair:
    """The server's minion key pair, accepted on the master before the server exists.

    salt-cloud makes (and accepts) a pair itself when a profile has ``deploy: True``;
    otherwise gdl preseeds one.
    """
    name = vm_["name"]
    if vm_.get("pub_key") and vm_.get("priv_key"):
        keys.accept(pki_dir, name, vm_["pub_key"])
        return keys.KeyPair(public_pem=vm_["pub_key"], private_pem=vm_["priv_key"])
    return keys.preseed(pki_dir, name)
