"""Cloud credentials never reach the runner's output, the master's log or its job cache.

A real salt-master is set up for the openstack provider with a clouds.yaml
that holds a password, pointing at a stand-in Keystone on 127.0.0.1 that
answers every login with 401 (or at a port where nothing listens).  A build is
refused with one line about the credentials; the password is sent to the
identity service and appears nowhere else.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from gdl_harness.salt_daemons import SaltMaster
from gdl_harness.salt_process import free_port

pytestmark = pytest.mark.integration

PASSWORD = "gds-Pa55w0rd-never-shown"


class StandInKeystone(BaseHTTPRequestHandler):
    """Version discovery, and 401 for every token request."""

    bodies: list[bytes] = []

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def _send(self, status: int, data: dict) -> None:
        body = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        host, port = self.server.server_address[:2]
        self._send(
            200,
            {
                "version": {
                    "id": "v3.14",
                    "status": "stable",
                    "updated": "2020-04-07T00:00:00Z",
                    "links": [{"rel": "self", "href": f"http://{host}:{port}/v3/"}],
                    "media-types": [
                        {
                            "base": "application/json",
                            "type": "application/vnd.openstack.identity-v3+json",
                        }
                    ],
                }
            },
        )

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.bodies.append(self.rfile.read(length))
        self._send(
            401,
            {
                "error": {
                    "code": 401,
                    "title": "Unauthorized",
                    "message": "The request you have made requires authentication.",
                }
            },
        )


@pytest.fixture(scope="module")
def keystone() -> Iterator[tuple[str, list[bytes]]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), StandInKeystone)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v3", StandInKeystone.bodies
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def _clouds_file(path: Path, auth_url: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "clouds": {
                    "gdscloud": {
                        "auth": {
                            "auth_url": auth_url,
                            "username": "gds-user",
                            "password": PASSWORD,
                            "project_name": "gds-project",
                            "user_domain_name": "Default",
                            "project_domain_name": "Default",
                        },
                        "identity_api_version": 3,
                    }
                }
            }
        )
    )
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def master(
    tmp_path_factory: pytest.TempPathFactory, keystone: tuple[str, list[bytes]]
) -> Iterator[SaltMaster]:
    root = tmp_path_factory.mktemp("gdscreds", numbered=True)
    clouds = _clouds_file(root / "clouds.yaml", keystone[0])
    daemon = SaltMaster(
        root / "master",
        gdl_settings={
            "provider": "openstack",
            "openstack": {
                "cloud": "gdscloud",
                "clouds_file": str(clouds),
                "image": "debian-12",
                "network": "private",
                "master_address": "127.0.0.1",
            },
        },
    )
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()


def _files_under(*roots: Path) -> Iterator[tuple[Path, bytes]]:
    for root in roots:
        paths = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        for path in paths:
            yield path, path.read_bytes()


def test_rejected_password_is_reported_without_it(
    master: SaltMaster, keystone: tuple[str, list[bytes]]
) -> None:
    done = master.run("gdl.build", "app=hello_world", "env=dev", "servers=1", timeout=300)
    assert done.returncode != 0
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert len(lines) == 1 and "OpenStack rejected the credentials" in lines[0], done.stdout
    # The password went to the identity service, so the test had something to leak.
    assert any(PASSWORD.encode() in body for body in keystone[1])
    assert PASSWORD not in done.stdout + done.stderr
    for path, data in _files_under(master.log_file, master.output_file, master.cache_dir / "jobs"):
        assert PASSWORD.encode() not in data, f"the cloud password is in {path}"


def test_unreachable_cloud_is_reported_without_the_password(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    closed = f"http://127.0.0.1:{free_port()}/v3"
    clouds = _clouds_file(tmp_path / "clouds.yaml", closed)
    daemon = SaltMaster(
        tmp_path_factory.mktemp("gdscreds", numbered=True),
        gdl_settings={
            "provider": "openstack",
            "openstack": {
                "cloud": "gdscloud",
                "clouds_file": str(clouds),
                "image": "debian-12",
                "network": "private",
                "master_address": "127.0.0.1",
            },
        },
    )
    try:
        daemon.start()
        done = daemon.run("gdl.build", "app=hello_world", "env=dev", "servers=1", timeout=300)
        assert done.returncode != 0
        assert "cannot reach OpenStack" in done.stdout, done.stdout
        assert PASSWORD not in done.stdout + done.stderr
        for path, data in _files_under(daemon.log_file, daemon.output_file):
            assert PASSWORD.encode() not in data, f"the cloud password is in {path}"
    finally:
        daemon.stop()
