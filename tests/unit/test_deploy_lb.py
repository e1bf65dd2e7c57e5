"""The parts of _modules/gdl_lb.py a rolling deploy uses: wait_up and check_http."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator

import pytest
from salt.exceptions import CommandExecutionError

from tests.unit.test_gdl_lb import gdl_lb, haproxy  # noqa: F401 (fixtures)


class HealthHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        answers = self.server.answers  # type: ignore[attr-defined]
        status, version = answers.pop(0) if len(answers) > 1 else answers[0]
        self.server.hosts.append(self.headers.get("Host"))  # type: ignore[attr-defined]
        body = json.dumps({"status": "ok", "version": version}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health() -> Iterator[http.server.HTTPServer]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), HealthHandler)
    server.answers = [(200, "1.0.0")]  # type: ignore[attr-defined]
    server.hosts = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def url(server: http.server.HTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/healthz"


def test_check_http_waits_for_the_new_version(gdl_lb, health):  # noqa: F811
    health.answers[:] = [(502, None), (200, "1.0.0"), (200, "1.1.0")]
    answer = gdl_lb.check_http(url(health), host="blog", version="1.1.0", timeout=5, interval=0)
    assert answer == {"healthy": True, "status": 200, "version": "1.1.0", "detail": "ok"}
    assert health.hosts[0] == "blog"


def test_check_http_gives_up_on_an_error_answer(gdl_lb, health):  # noqa: F811
    health.answers[:] = [(500, "1.1.0")]
    answer = gdl_lb.check_http(url(health), version="1.1.0", timeout=0.3, interval=0.05)
    assert answer["healthy"] is False
    assert answer["detail"] == "answered 500"


def test_check_http_once_reports_what_runs(gdl_lb, health):  # noqa: F811
    answer = gdl_lb.check_http(url(health), timeout=0)
    assert (answer["healthy"], answer["version"]) == (True, "1.0.0")


def test_check_http_without_an_answer(gdl_lb):  # noqa: F811
    answer = gdl_lb.check_http("http://127.0.0.1:9/healthz", timeout=0)
    assert answer["healthy"] is False and answer["status"] is None
    assert answer["detail"].startswith("no answer")
    with pytest.raises(CommandExecutionError, match="not an http"):
        gdl_lb.check_http("file:///etc/passwd", timeout=0)


def test_wait_up_needs_a_plain_up(gdl_lb, haproxy):  # noqa: F811
    haproxy.state["app-0-blog-dev"]["status"] = "DOWN 1/2"
    assert gdl_lb.wait_up("app-0-blog-dev", timeout=0.3, interval=0.05) is False
    haproxy.state["app-0-blog-dev"]["status"] = "UP"
    assert gdl_lb.wait_up("app-0-blog-dev", timeout=1) is True
