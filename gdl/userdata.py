"""Cloud-init user data that turns a fresh server into a gdl minion.

The server installs Salt in its own virtualenv (the distribution's Salt may be
missing or too old), receives its preseeded key pair (the master generated it
and has already accepted the public half) and starts ``salt-minion`` pointed at
the master.  Nothing here asks the master for anything: a server boots into an
accepted minion or not at all.

The user data carries the minion's private key: it is handed to the cloud and
never printed.  :func:`describe` says what a document holds without it.
"""

from __future__ import annotations

import yaml

from gdl.providers.base import ServerRequest

SALT_REQUIREMENT = "salt>=3008.4,<3009"
SALT_PREFIX = "/opt/gdl/salt"
MINION_CONFIG = "/etc/salt/minion.d/gdl.conf"
MINION_PKI_DIR = "/etc/salt/pki/minion"
INSTALL_SCRIPT = "/usr/local/sbin/gdl-minion-install"
# What a Debian/Ubuntu cloud image lacks to make Salt's virtualenv and to keep
# the metadata service to root.
DEFAULT_PACKAGES = ("python3-venv", "iptables")
METADATA_ADDRESS = "169.254.169.254"

# The metadata service serves this server's user data, minion key included, to any
# local process that asks.  Run at every boot (cloud-init bootcmd, before anything
# else of the user data) and again before Salt is installed (once the packages are):
# from then on only root reaches it.  Idempotent; fails when it cannot filter.
_NOT_ROOT_TO_METADATA = f"-d {METADATA_ADDRESS}/32 -m owner ! --uid-owner 0 -j REJECT"
METADATA_GUARD = f"""if command -v iptables >/dev/null 2>&1; then
    iptables -w -C OUTPUT {_NOT_ROOT_TO_METADATA} 2>/dev/null ||
        iptables -w -I OUTPUT 1 {_NOT_ROOT_TO_METADATA}
elif command -v nft >/dev/null 2>&1; then
    nft -f - <<'NFT'
table inet gdl_metadata
delete table inet gdl_metadata
table inet gdl_metadata {{
    chain output {{
        type filter hook output priority filter; policy accept;
        ip daddr {METADATA_ADDRESS} meta skuid != 0 reject
    }}
}}
NFT
else
    echo "gdl: neither iptables nor nft: the metadata service stays open to every user" >&2
    exit 1
fi
"""

# Runs once at first boot (cloud-init runcmd). Plain sh: it must work on any image with
# python3; Debian/Ubuntu images need python3-venv, which cloud-init installs first.
_INSTALL = """#!/bin/sh
# Install Salt in a virtualenv and start the minion; safe to run again.
set -eu
{guard}
prefix={prefix}
if [ ! -x "$prefix/bin/salt-minion" ]; then
    python3 -m venv "$prefix"
    "$prefix/bin/pip" install --quiet --upgrade pip
    "$prefix/bin/pip" install --quiet '{requirement}'
fi
ln -sf "$prefix/bin/salt-call" /usr/local/bin/salt-call
if [ -d /run/systemd/system ]; then
    cat > /etc/systemd/system/salt-minion.service <<'UNIT'
[Unit]
Description=Salt minion (gdl)
After=network-online.target
Wants=network-online.target

[Service]
ExecStart={prefix}/bin/salt-minion
Restart=always
KillMode=process

[Install]
WantedBy=multi-user.target
UNIT
    systemctl daemon-reload
    systemctl enable --now salt-minion.service
else
    "$prefix/bin/salt-minion" -d
fi
"""


def minion_config(
    request: ServerRequest, master_port: int | None = None, publish_port: int | None = None
) -> str:
    """The minion's ``minion.d`` drop-in: who the master is and who the minion is."""
    config: dict = {
        "master": request.master_address,
        "id": request.name,
        # The key is preseeded and accepted: a rejected key is a fault, not a wait.
        "acceptance_wait_time": 5,
        "grains": {"gdl": {"app": request.app, "env": request.env, "role": request.role}},
    }
    if request.master_finger:
        # The minion checks the master's key against it before it trusts it.
        config["master_finger"] = request.master_finger
    if master_port:
        config["master_port"] = master_port
    if publish_port:
        config["publish_port"] = publish_port
    return yaml.safe_dump(config, default_flow_style=False, sort_keys=True)


def render(
    request: ServerRequest,
    packages: tuple[str, ...] = DEFAULT_PACKAGES,
    master_port: int | None = None,
    publish_port: int | None = None,
) -> str:
    """The ``#cloud-config`` document for ``request``'s server (contains its private key)."""
    # The first thing the user data does, at every boot: only root reaches the metadata.
    document: dict = {"bootcmd": [METADATA_GUARD], "hostname": request.name, "fqdn": request.name}
    if packages:  # cloud-init's schema refuses an empty list
        document["packages"] = list(packages)
    document |= {
        "write_files": [
            {
                "path": MINION_CONFIG,
                "permissions": "0644",
                "owner": "root:root",
                "content": minion_config(request, master_port, publish_port),
            },
            {
                "path": f"{MINION_PKI_DIR}/minion.pem",
                "permissions": "0400",
                "owner": "root:root",
                "content": request.minion_private_key,
            },
            {
                "path": f"{MINION_PKI_DIR}/minion.pub",
                "permissions": "0644",
                "owner": "root:root",
                "content": request.minion_public_key,
            },
            {
                "path": INSTALL_SCRIPT,
                "permissions": "0755",
                "owner": "root:root",
                "content": _INSTALL.format(
                    guard=METADATA_GUARD.strip(), prefix=SALT_PREFIX, requirement=SALT_REQUIREMENT
                ),
            },
        ],
        "runcmd": [[INSTALL_SCRIPT]],
    }
    return "#cloud-config\n" + yaml.safe_dump(document, default_flow_style=False, sort_keys=False)


def describe(user_data: str) -> str:
    """A one-line account of a user-data document that never shows file contents."""
    document = yaml.safe_load(user_data.split("\n", 1)[1]) or {}
    paths = ", ".join(f["path"] for f in document.get("write_files", []))
    return f"cloud-config for {document.get('hostname', '?')}: writes {paths}"
