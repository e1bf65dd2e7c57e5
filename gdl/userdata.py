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

import shlex
from dataclasses import dataclass

import yaml

from gdl.providers.base import ServerRequest

SALT_REQUIREMENT = "salt>=3008.4,<3009"
PUBLIC_INDEX = "https://pypi.org/simple"
SALT_PREFIX = "/opt/gdl/salt"
MINION_CONFIG = "/etc/salt/minion.d/gdl.conf"
MINION_PKI_DIR = "/etc/salt/pki/minion"
INSTALL_SCRIPT = "/usr/local/sbin/gdl-minion-install"
# Nothing from the distribution: the venv is made --without-pip and pip's own wheel,
# from the package source, installs Salt (images without python3-venv work).
DEFAULT_PACKAGES: tuple[str, ...] = ()
# First boot tries this many times, waiting 5 s, then twice as long each time, up to
# MAX_WAIT s: about 12 minutes of waiting in all, within the default minion_timeout (900 s),
# while the master may still be building its wheelhouse.
ATTEMPTS = 16
MAX_WAIT = 60
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


@dataclass(frozen=True)
class SaltSource:
    """Where first boot gets Salt: the master's wheelhouse, a mirror, a proxy."""

    find_links: str | None = None  # http://<master>:<port>/<wheelhouse>/
    requirement: str = SALT_REQUIREMENT
    index_url: str | None = None  # a package index mirror, besides the master
    http_proxy: str | None = None  # for pip and for fetching pip's wheel
    no_proxy: str | None = None  # the master's address: never through the proxy
    trusted_host: str | None = None  # the master: pip takes plain HTTP from it


def master_source(
    master_address: str,
    port: int,
    wheelhouse: str,
    salt_version: str,
    index_url: str | None = None,
    http_proxy: str | None = None,
) -> SaltSource:
    """The master's package source (:mod:`gdl.package_source`) for a minion of ``salt_version``."""
    return SaltSource(
        find_links=f"http://{master_address}:{port}/{wheelhouse}/",
        requirement=f"salt=={salt_version}",
        index_url=index_url,
        http_proxy=http_proxy,
        no_proxy=master_address,
        trusted_host=master_address,
    )


# Runs once at first boot (cloud-init runcmd). Plain sh on any image with python3: the venv
# is made --without-pip and pip runs from its wheel, fetched from the package source. Every
# failure is said on stderr, which cloud-init copies to the console log.
_INSTALL = """#!/bin/sh
# Install Salt in a virtualenv from the package source and start the minion; safe to run again.
set -u
{guard}
prefix={prefix}
requirement={requirement}
find_links={find_links}
index_url={index_url}
trusted_host={trusted_host}
attempts={attempts}
say() {{ echo "gdl-minion-install: $*" >&2; }}
{proxy}
# pip's own wheel, from the find-links page (or the index): pip runs from the file itself.
fetch_pip() {{
    python3 - "$find_links" "$index_url" "$1" <<'PY'
import re, sys, urllib.parse, urllib.request
links, index, target = sys.argv[1:]
wheel = re.compile(r'href="([^"#]*pip-[0-9][^"/#]*-py3-none-any[.]whl)')
for base in (links, index.rstrip("/") + "/pip/" if index else ""):
    if not base:
        continue
    try:
        found = wheel.findall(urllib.request.urlopen(base, timeout=30).read().decode())
    except OSError as error:
        print(f"gdl-minion-install: cannot read {{base}} ({{error}})", file=sys.stderr)
        continue
    if not found:
        print(f"gdl-minion-install: no pip wheel at {{base}}", file=sys.stderr)
        continue
    urllib.request.urlretrieve(urllib.parse.urljoin(base, found[-1]), target)
    sys.exit(0)
sys.exit(1)
PY
}}
install_salt() {{
    if [ ! -x "$prefix/bin/python" ]; then
        python3 -m venv --without-pip "$prefix" || {{ say "python3 -m venv failed"; return 1; }}
    fi
    wheel="$prefix/pip-bootstrap.whl"
    fetch_pip "$wheel" || {{ say "cannot fetch pip's wheel"; return 1; }}
    if [ -n "$index_url" ]; then
        where="--index-url $index_url"
    else
        where="--no-index"
    fi
    links=""
    [ -n "$find_links" ] && links="--find-links $find_links"
    [ -n "$trusted_host" ] && links="$links --trusted-host $trusted_host"
    # --ignore-installed: pip running from its wheel counts itself installed, and the
    # venv needs a pip of its own. $where and $links are option lists, split on purpose.
    "$prefix/bin/python" "$wheel/pip" install --disable-pip-version-check --no-input \\
        --quiet --retries 2 --timeout 30 --ignore-installed \\
        $where $links pip "$requirement" \\
        || {{ say "pip install $requirement failed"; return 1; }}
}}
if [ ! -x "$prefix/bin/salt-minion" ]; then
    attempt=1
    wait=5
    until install_salt; do
        if [ "$attempt" -ge "$attempts" ]; then
            say "giving up: Salt is not installed after $attempts attempts"
            exit 1
        fi
        say "attempt $attempt of $attempts failed; trying again in $wait s"
        sleep "$wait"
        attempt=$((attempt + 1))
        wait=$((wait * 2))
        [ "$wait" -gt {max_wait} ] && wait={max_wait}
    done
    say "Salt installed from ${{find_links:-$index_url}}"
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
    systemctl daemon-reload || say "systemctl daemon-reload failed"
    systemctl enable --now salt-minion.service || {{ say "salt-minion did not start"; exit 1; }}
else
    "$prefix/bin/salt-minion" -d || {{ say "salt-minion did not start"; exit 1; }}
fi
"""


def install_script(source: SaltSource) -> str:
    """The first-boot script that installs Salt from ``source`` and starts the minion."""
    if not source.find_links and not source.index_url:
        raise ValueError("a SaltSource needs find_links, index_url or both")
    proxy = ""
    if source.http_proxy:
        proxied = shlex.quote(source.http_proxy)
        proxy = (
            f"http_proxy={proxied} https_proxy={proxied} "
            f"no_proxy={shlex.quote(source.no_proxy or '')}\n"
            "export http_proxy https_proxy no_proxy"
        )
    return _INSTALL.format(
        guard=METADATA_GUARD.strip(),
        prefix=SALT_PREFIX,
        requirement=shlex.quote(source.requirement),
        find_links=shlex.quote(source.find_links or ""),
        index_url=shlex.quote(source.index_url or ""),
        trusted_host=shlex.quote(source.trusted_host or ""),
        attempts=ATTEMPTS,
        max_wait=MAX_WAIT,
        proxy=proxy,
    )


# A state with onlyif, unless or creates makes Salt's loader look for a function no
# module has; by default it then imports every module it knows before it gives up, a
# second of CPU in every state run. Narrowed to the modules whose file name holds the
# name looked for (as Salt's own test suites run), the search ends at once.
STRICT_LOADER = {"lazy_loader_strict_matching": True}


def minion_config(
    request: ServerRequest, master_port: int | None = None, publish_port: int | None = None
) -> str:
    """The minion's ``minion.d`` drop-in: who the master is and who the minion is."""
    config: dict = {
        "master": request.master_address,
        "id": request.name,
        # The key is preseeded and accepted: a rejected key is a fault, not a wait.
        "acceptance_wait_time": 5,
        **STRICT_LOADER,
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
    source: SaltSource | None = None,
) -> str:
    """The ``#cloud-config`` document for ``request``'s server (contains its private key).

    ``source`` says where Salt comes from; without it, an index at ``index_url``
    is not known either, so the default is the public index (PyPI).
    """
    source = source or SaltSource(index_url=PUBLIC_INDEX)
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
                "content": install_script(source),
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
