"""The ``gdl`` command line: its arguments, the runner calls they make, refusals (no daemons)."""

from __future__ import annotations

from typing import Any

import pytest

from gdl import cli


def call(*argv: str) -> tuple[str, list[str]]:
    return cli.runner_call(cli.parser().parse_args(argv))


def test_build_takes_app_env_servers_size_in_order():
    assert call("build", "blog", "dev", "2", "m1.small") == (
        "gdl.build",
        ["app=blog", "env=dev", "servers=2", "size=m1.small"],
    )


def test_build_options_become_runner_arguments():
    assert call(
        "build", "blog", "dev", "3", "m1.tiny", "--provider", "local", "--vrrp", "fast", "--test"
    ) == (
        "gdl.build",
        [
            "app=blog",
            "env=dev",
            "provider=local",
            "test=True",
            "servers=3",
            "size=m1.tiny",
            "vrrp=fast",
        ],
    )


def test_https_options_become_runner_arguments():
    assert call("build", "blog", "dev", "2", "m1.small", "--tls", "auto", "--http", "allow")[1][
        4:
    ] == ["tls=auto", "http=allow"]
    assert call(
        "build", "blog", "dev", "2", "m1.small", "--tls-cert", "/etc/ssl/a.pem", "--tls-key", "/k"
    )[1][4:] == ["tls_cert=/etc/ssl/a.pem", "tls_key=/k"]


def test_tuning_options_become_runner_arguments_as_typed():
    assert call(
        "build",
        "blog",
        "dev",
        "2",
        "m1.small",
        "--sticky",
        "true",
        "--health-interval",
        "0.5",
        "--health-fall",
        "3",
        "--health-rise",
        "2",
        "--timeout-server",
        "60",
    )[1][4:] == [
        "health_interval=0.5",
        "health_fall=3",
        "health_rise=2",
        "sticky=true",
        "timeout_server=60",
    ]
    # The runner checks them, as for salt-run.
    assert call("build", "blog", "dev", "2", "m1.small", "--health-fall", "many")[1][4:] == [
        "health_fall=many"
    ]


def test_build_destroy_and_destroy_call_the_destroy_runner():
    assert call("build", "blog", "dev", "2", "m1.small", "--destroy") == (
        "gdl.destroy",
        ["app=blog", "env=dev"],
    )
    assert call("destroy", "blog", "dev") == ("gdl.destroy", ["app=blog", "env=dev"])
    assert call("destroy", "blog", "dev", "--test") == (
        "gdl.destroy",
        ["app=blog", "env=dev", "test=True"],
    )


def test_status_and_list():
    assert call("status", "blog", "dev") == ("gdl.status", ["app=blog", "env=dev"])
    assert call("list") == ("gdl.list", [])


def test_values_reach_the_runner_as_typed():
    # The runner checks them and refuses in its own one line, as for salt-run.
    assert call("build", "blog", "dev", "zero", "huge")[1][2:] == ["servers=zero", "size=huge"]


def test_config_dir_before_or_after_the_command():
    parse = cli.parser().parse_args
    assert parse(["status", "a", "b"]).config_dir == "/etc/salt"
    assert parse(["-c", "/srv/salt", "status", "a", "b"]).config_dir == "/srv/salt"
    assert parse(["status", "a", "b", "--config-dir", "/x"]).config_dir == "/x"


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["build", "blog", "dev", "2"],
        ["status", "blog"],
        ["frobnicate"],
        ["build", "blog", "dev", "2", "m1.small", "--destroy", "--vrrp", "fast"],
        ["build", "blog", "dev", "2", "m1.small", "--destroy", "--tls", "auto"],
        ["build", "blog", "dev", "2", "m1.small", "--destroy", "--sticky", "true"],
    ],
)
def test_incomplete_commands_print_usage_and_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2
    assert "usage: gdl" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv", [["--help"], ["build", "--help"], ["status", "-h"], ["list", "-h"]]
)
def test_help(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 0
    assert "usage: gdl" in capsys.readouterr().out


class FakeClient:
    def __init__(self, done: dict[str, Any]) -> None:
        self.done = done
        self.calls: list[tuple[str, list[str]]] = []

    def __enter__(self) -> FakeClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass

    def cmd(
        self, function: str, call: list[str], pub_data: dict[str, str], full_return: bool
    ) -> dict[str, Any]:
        assert full_return
        assert pub_data["user"]
        self.calls.append((function, call))
        return self.done


def test_a_refusal_prints_the_runners_line_and_exits_1(monkeypatch, capsys):
    line = "servers must be a whole number from 1 to 50, not 0: give servers=1 to servers=50"
    client = FakeClient({"success": False, "return": line, "retcode": 1})
    monkeypatch.setattr(cli, "_runner_client", lambda config_dir: client)
    assert cli.main(["build", "blog", "dev", "0", "m1.small"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == line + "\n"
    assert client.calls == [("gdl.build", ["app=blog", "env=dev", "servers=0", "size=m1.small"])]


def test_a_build_prints_the_url_first(monkeypatch, capsys):
    result = {
        "result": True,
        "environment": "blog-dev",
        "url": "http://10.9.0.10/",
        "servers": [{"name": "app-0-blog-dev", "state": "running"}],
    }
    monkeypatch.setattr(
        cli, "_runner_client", lambda config_dir: FakeClient({"success": True, "return": result})
    )
    assert cli.main(["-c", "/srv/salt", "build", "blog", "dev", "1", "m1.small"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "http://10.9.0.10/"
    assert "environment: blog-dev" in lines
    assert "url" not in "\n".join(lines[1:])


def test_a_plan_prints_its_lines():
    result = {"result": True, "test": True, "environment": "blog-dev", "plan": ["create a"]}
    assert cli.summary(result)[0] == "create a"


def test_list_prints_a_line_per_environment():
    assert cli.summary([]) == ["no environments"]
    found = [
        {"app": "blog", "env": "dev", "provider": "local", "app_servers": 2, "lbs": 2},
        {"app": "x", "env": "qa", "provider": "local", "app_servers": 0, "lbs": 0, "requested": 1},
    ]
    assert cli.summary(found) == [
        "blog-dev  local  2 app servers, 2 load balancers",
        "x-qa  local  0 app servers, 0 load balancers (1 requested)",
    ]


def test_status_shows_each_backends_sessions_and_request_rate():
    result = {
        "environment": "blog-dev",
        "url": "http://10.9.0.10/",
        "vip_holder": "lb-0-blog-dev",
        "backends": [
            {
                "backend": "be_blog_dev",
                "name": "app-0-blog-dev",
                "status": "UP",
                "sessions": 2,
                "request_rate": 14,
                "weight": 1,
                "check": "L7OK",
                "address": "10.9.0.11:80",
                "downtime": 0,
            },
            {
                "backend": "be_blog_dev",
                "name": "app-1-blog-dev",
                "status": "DOWN",
                "sessions": 0,
                "request_rate": 0,
                "check": "L7STS",
                "address": "10.9.0.12:80",
            },
        ],
    }
    lines = cli.summary(result)
    assert lines[0] == "http://10.9.0.10/"
    table = lines[lines.index("backends (haproxy on lb-0-blog-dev):") + 1 :]
    assert [line.split() for line in table] == [
        ["SERVER", "STATUS", "SESSIONS", "REQ/S", "CHECK", "ADDRESS"],
        ["app-0-blog-dev", "UP", "2", "14", "L7OK", "10.9.0.11:80"],
        ["app-1-blog-dev", "DOWN", "0", "0", "L7STS", "10.9.0.12:80"],
    ]
    # The numbers line up under their titles.
    assert table[1].index("14") + 2 == table[0].index("REQ/S") + len("REQ/S")
    assert "be_blog_dev" not in "\n".join(lines)


def test_status_without_a_vip_holder_or_backends_says_so():
    assert cli.summary({"vip_holder": None, "backends": None})[-1].endswith("backends: null")
    assert cli.summary({"vip_holder": "lb-0-x-y", "backends": []})[-1] == (
        "backends: none in haproxy"
    )
    # An LB whose module predates request rates: a dash, not a failure.
    lines = cli.summary({"vip_holder": "lb-0-x-y", "backends": [{"name": "a", "sessions": 1}]})
    assert lines[-1].split() == ["a", "-", "1", "-", "-", "-"]
