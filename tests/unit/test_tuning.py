"""The load balancers' tuning arguments: checked, kept in the record, written to pillar."""

from __future__ import annotations

import pytest
import yaml

from gdl import envstore, pillar, tuning
from gdl.errors import InvalidRequest
from gdl.providers.base import RUNNING, EnvNetwork, Server

NETWORK = EnvNetwork("10.20.0.10", "10.20.0.10", "10.20.0.0/24", 42, "10.20.0.1")
SERVERS = [Server("app-0-blog-dev", "blog", "dev", "app", RUNNING, "10.20.0.11", "m1", "x")]


def test_nothing_given_is_nothing_chosen() -> None:
    assert tuning.parse_lb_tuning() == {}
    assert tuning.parse_lb_tuning(**dict.fromkeys(tuning.ARGUMENTS)) == {}
    assert tuning.parse_lb_tuning(health_interval="", sticky=None) == {}


def test_values_as_yaml_and_strings_give_them() -> None:
    assert tuning.parse_lb_tuning(
        health_interval=0.5, health_fall=3, health_rise="2", sticky="true", timeout_server=60
    ) == {
        "health_interval": 0.5,
        "health_fall": 3,
        "health_rise": 2,
        "sticky": True,
        "timeout_server": 60,
    }
    assert tuning.parse_lb_tuning(health_interval="0.25") == {"health_interval": 0.25}
    assert tuning.parse_lb_tuning(health_interval=60, sticky=False) == {
        "health_interval": 60.0,
        "sticky": False,
    }
    assert tuning.parse_lb_tuning(health_interval=0.2)["health_interval"] == 0.2


@pytest.mark.parametrize(
    ("given", "fragment"),
    [
        (
            {"health_interval": 0.1},
            "health_interval=0.1 is out of range: give seconds from 0.2 to 60",
        ),
        ({"health_interval": 61}, "health_interval=61 is out of range"),
        ({"health_interval": 0.2505}, "finer than a millisecond"),
        ({"health_interval": "fast"}, "health_interval='fast' is not a number of seconds"),
        ({"health_interval": "inf"}, "not a number of seconds"),
        ({"health_interval": "1e1"}, "not a number of seconds"),
        ({"health_interval": float("nan")}, "not a number of seconds"),
        ({"health_interval": True}, "not a number of seconds"),
        ({"health_interval": [1]}, "not a number of seconds"),
        ({"health_fall": 0}, "health_fall=0 is out of range: give a whole number from 1 to 10"),
        ({"health_fall": 11}, "health_fall=11 is out of range"),
        ({"health_rise": 1.5}, "health_rise=1.5 is not a whole number"),
        ({"health_rise": "two"}, "health_rise='two' is not a whole number"),
        ({"sticky": "maybe"}, "sticky='maybe' is not true or false"),
        ({"sticky": 1}, "sticky=1 is not true or false"),
        (
            {"timeout_server": 0},
            "timeout_server=0 is out of range: give a whole number from 1 to 3600",
        ),
        ({"timeout_server": "30s"}, "timeout_server='30s' is not a whole number"),
        ({"colour": "red"}, "unknown tuning colour"),
    ],
)
def test_bad_values_are_refused_in_one_line(given, fragment) -> None:
    with pytest.raises(InvalidRequest) as refused:
        tuning.parse_lb_tuning(**given)
    line = str(refused.value)
    assert fragment in line, line
    assert "\n" not in line and len(line) < 300


def test_haproxy_settings_are_those_given_in_haproxys_units() -> None:
    assert tuning.haproxy_settings({}) == {}
    assert tuning.haproxy_settings(
        {
            "health_interval": 0.25,
            "health_fall": 3,
            "health_rise": 4,
            "sticky": True,
            "timeout_server": 90,
        }
    ) == {
        "check_inter": "250ms",
        "check_fall": 3,
        "check_rise": 4,
        "sticky": True,
        "timeout_server": "90s",
    }
    assert tuning.haproxy_settings({"health_interval": 60.0}) == {"check_inter": "60000ms"}


def test_the_record_keeps_tuning_a_later_build_does_not_give(tmp_path) -> None:
    record = envstore.new_record("blog", "dev", "local", 2, "m1.small")
    assert record.lb_tuning == {}
    assert record.with_lb_tuning({}) is record
    record = record.with_lb_tuning({"sticky": True, "health_interval": 0.5})
    record = record.with_lb_tuning({"health_interval": 2.0})
    assert record.lb_tuning == {"sticky": True, "health_interval": 2.0}
    envstore.save(tmp_path, record)
    assert envstore.load(tmp_path, "blog", "dev").lb_tuning == record.lb_tuning


def test_a_record_written_before_tuning_loads_without_it(tmp_path) -> None:
    record = envstore.new_record("blog", "dev", "local", 2, "m1.small")
    path = envstore.save(tmp_path, record)
    text = path.read_text().replace('"lb_tuning": {},', "")
    assert "lb_tuning" not in text
    path.write_text(text)
    assert envstore.load(tmp_path, "blog", "dev").lb_tuning == {}


def test_pillar_carries_the_records_tuning_only_when_given(tmp_path) -> None:
    record = envstore.new_record("blog", "dev", "local", 1, "m1.small")
    common, _ = pillar.env_pillar(record, NETWORK, SERVERS, ["app-0-blog-dev"])
    assert "roles" not in common["gdl"]
    record = record.with_lb_tuning({"sticky": True, "health_interval": 0.5})
    pillar.write(tmp_path, record, NETWORK, SERVERS, ["app-0-blog-dev"])
    common_path, lb_path = pillar.pillar_files(tmp_path, "blog", "dev")
    written = yaml.safe_load(common_path.read_text().split("\n", 1)[1])
    assert written["gdl"]["roles"] == {"lb": {"haproxy": {"check_inter": "500ms", "sticky": True}}}
    assert "roles" not in lb_path.read_text()
