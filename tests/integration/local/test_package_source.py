"""The master as its servers' package source: a real master, a local host without the internet.

The master's ``gdl_package_source`` engine serves the Salt wheelhouse on the
bridge address; inside a local host a venv made ``--without-pip`` installs the
master's Salt from it alone (pip run from its own wheel, ``--no-index``, the
machine's pip configuration ignored), and ``salt-minion --version`` runs.
Paths that leave the wheelhouse are refused.

The wheelhouse is built once per machine under ``/var/tmp`` (the first build
downloads Salt's dependencies: minutes) and copied into each test master's
package source, as :func:`gdl.salt_wheelhouse.ensure_salt_wheelhouse` would
leave it.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import salt.version

from gdl import salt_wheelhouse
from gdl.providers.base import ServerRequest
from gdl_harness.local_cloud import LocalCloud
from gdl_harness.salt_daemons import port_open

pytestmark = pytest.mark.integration

BUILD_CACHE = Path("/var/tmp/gdl-test-package-source")
HOST = "app-0-pkg-src"

# Run inside the host: fetch pip's wheel from the find-links page, as first boot does.
FETCH_PIP = """
import re, sys, urllib.parse, urllib.request
base, target = sys.argv[1:]
page = urllib.request.urlopen(base, timeout=30).read().decode()
(name,) = re.findall(r'href="(pip-[0-9][^"]*-py3-none-any[.]whl)"', page)
urllib.request.urlretrieve(urllib.parse.urljoin(base, name), target)
"""

# Run inside the host: the status of each raw request path.
ASK = """
import http.client, sys
host, port = sys.argv[1], int(sys.argv[2])
for path in sys.argv[3:]:
    connection = http.client.HTTPConnection(host, port, timeout=10)
    connection.putrequest("GET", path, skip_accept_encoding=True)
    connection.endheaders()
    response = connection.getresponse()
    body = response.read()
    print(response.status, b"PRIVATE" in body, path)
"""


def in_host(cloud: LocalCloud, argv: list[str], timeout: float = 120) -> str:
    # The host's /etc is a copy of the machine's: its pip configuration must not add sources.
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": "/root",
        "TMPDIR": "/tmp",
        "LANG": "C.UTF-8",
        "PIP_CONFIG_FILE": os.devnull,
    }
    done = subprocess.run(
        cloud.provider().run(HOST, argv), capture_output=True, text=True, timeout=timeout, env=env
    )
    assert done.returncode == 0, f"{argv[:3]} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_a_host_installs_salt_from_the_master_alone(local_cloud: LocalCloud) -> None:
    master = local_cloud.master
    version = subprocess.run(
        ["/usr/bin/python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    target = salt_wheelhouse.Target(
        salt_version=salt.version.__version__, python=version, arch=platform.machine()
    )
    built = salt_wheelhouse.ensure_salt_wheelhouse(BUILD_CACHE, target, python=sys.executable)
    root = master.state_dir / salt_wheelhouse.PACKAGE_SOURCE_DIR
    shutil.copytree(built, root / target.name)
    # Private files of the master beside and inside the served directory.
    (master.state_dir / "private.txt").write_text("PRIVATE")
    os.symlink(master.state_dir / "private.txt", root / target.name / "link-0-py3-none-any.whl")
    os.symlink(master.state_dir, root / "state")

    # The engine started with the master, on its bridge address.
    deadline = time.monotonic() + 60
    while not port_open(master.interface, master.package_port):
        assert time.monotonic() < deadline, "the package source did not open its port"
        time.sleep(0.2)

    pair = master.preseed_minion(HOST)
    local_cloud.provider().create_servers(
        [
            ServerRequest(
                name=HOST,
                app="pkg",
                env="src",
                role="app",
                size="m1.tiny",
                minion_public_key=pair.public_pem,
                minion_private_key=pair.private_pem,
                master_address=master.interface,
            )
        ]
    )
    links = f"http://{master.interface}:{master.package_port}/{target.name}/"
    in_host(local_cloud, ["python3", "-m", "venv", "--without-pip", "/tmp/salt"])
    in_host(local_cloud, ["python3", "-c", FETCH_PIP, links, "/tmp/pip.whl"])
    in_host(
        local_cloud,
        [
            "/tmp/salt/bin/python",
            "/tmp/pip.whl/pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-index",
            "--find-links",
            links,
            "--trusted-host",
            master.interface,
            f"salt=={target.salt_version}",
            "pip",
        ],
        timeout=900,
    )
    shown = in_host(local_cloud, ["/tmp/salt/bin/salt-minion", "--version"])
    assert shown.split()[:2] == ["salt-minion", target.salt_version]

    answers = in_host(
        local_cloud,
        [
            "python3",
            "-c",
            ASK,
            master.interface,
            str(master.package_port),
            f"/{target.name}/",
            "/../private.txt",
            "/%2e%2e/private.txt",
            f"/{target.name}/../../private.txt",
            f"/{target.name}/link-0-py3-none-any.whl",
            "/state/private.txt",
            f"//{master.state_dir}/private.txt",
            f"{master.state_dir}/private.txt",
        ],
    ).splitlines()
    assert answers[0].startswith("200 False")
    for line in answers[1:]:
        status, leaked, _path = line.split(" ", 2)
        assert status in ("400", "403", "404") and leaked == "False", line
