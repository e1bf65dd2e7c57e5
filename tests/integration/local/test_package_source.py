"""The master as its servers' package source: a real master, a local host without the internet.

The master's ``gdl_package_source`` engine serves the Salt wheelhouse on the
bridge address; inside a local host, first boot's own install script (a venv
made ``--without-pip``, pip run from its wheel, ``--no-index``, the machine's
pip configuration ignored) fails while the wheelhouse is missing, says so,
retries, installs the master's Salt from the master alone, and
``salt-minion --version`` runs.  Paths that leave the wheelhouse are refused.

The wheelhouse comes from the tests' cache (:mod:`tests.support.wheelhouse`: built
there by :func:`gdl.salt_wheelhouse.ensure_salt_wheelhouse` the first time, a few
minutes, mostly waiting on the package index) and is copied into the test master's
package source, as a master's own build would leave it.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import time

import pytest
import salt.version

from gdl import salt_wheelhouse, userdata
from gdl.providers.base import ServerRequest
from gdl_harness.local_cloud import LocalCloud
from gdl_harness.salt_process import port_open
from tests.support.wheelhouse import cached_wheelhouse

# Minutes the first time on a machine (the cached wheelhouse is built): it runs in the
# long session, beside the rest.
pytestmark = [pytest.mark.integration, pytest.mark.long]

HOST = "app-0-pkg-src"

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


# The host's /etc is a copy of the machine's: its pip configuration must not add sources.
HOST_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
    "HOME": "/root",
    "TMPDIR": "/tmp",
    "LANG": "C.UTF-8",
    "PIP_CONFIG_FILE": os.devnull,
}


def in_host(cloud: LocalCloud, argv: list[str], timeout: float = 120) -> str:
    done = subprocess.run(
        cloud.provider().run(HOST, argv),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=HOST_ENV,
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
    built = cached_wheelhouse(target)
    root = master.state_dir / salt_wheelhouse.PACKAGE_SOURCE_DIR
    root.mkdir(parents=True, exist_ok=True)
    # Private files of the master beside and inside the served directory.
    (master.state_dir / "private.txt").write_text("PRIVATE")
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
    source = userdata.master_source(
        master.interface, master.package_port, target.name, target.salt_version
    )
    script = userdata.install_script(source)
    # The host already runs its minion (the local provider starts it): first boot's own start
    # of the minion is left out, the install runs as it is.
    script = script[: script.index('ln -sf "$prefix/bin/salt-call"')]
    # First boot starts while the master is "still building": the wheelhouse is not there yet.
    console = master.root / "console.log"
    with console.open("w") as output:
        first_boot = subprocess.Popen(
            local_cloud.provider().run(HOST, ["sh", "-c", script]),
            stdout=output,
            stderr=subprocess.STDOUT,
            env=HOST_ENV,
        )
    try:
        deadline = time.monotonic() + 120
        while "attempt 1 of" not in console.read_text():
            assert first_boot.poll() is None, console.read_text()
            assert time.monotonic() < deadline, console.read_text()
            time.sleep(0.2)
        shutil.copytree(built, root / target.name)
        assert first_boot.wait(timeout=900) == 0, console.read_text()
    finally:
        if first_boot.poll() is None:
            first_boot.kill()
    said = console.read_text()
    # Every failure is said, then the retry installs Salt from the master alone.
    assert "gdl-minion-install: cannot fetch pip's wheel" in said
    assert f"attempt 1 of {userdata.ATTEMPTS} failed; trying again in 5 s" in said
    assert f"gdl-minion-install: Salt installed from {source.find_links}" in said
    shown = in_host(local_cloud, [f"{userdata.SALT_PREFIX}/bin/salt-minion", "--version"])
    assert shown.split()[:2] == ["salt-minion", target.salt_version]
    # The venv was made --without-pip: its pip, too, came from the master.
    pips = in_host(local_cloud, [f"{userdata.SALT_PREFIX}/bin/python", "-m", "pip", "--version"])
    assert pips.startswith("pip ")

    os.symlink(master.state_dir / "private.txt", root / target.name / "link-0-py3-none-any.whl")
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
