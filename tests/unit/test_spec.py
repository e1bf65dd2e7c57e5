"""Parsing the runner's YAML-typed arguments into an EnvSpec."""

from __future__ import annotations

import pytest

from gdl import spec
from gdl.errors import InvalidRequest


def test_build_spec_defaults() -> None:
    result = spec.build_spec(app="blog", env="dev")
    assert result == spec.EnvSpec(
        app="blog", env="dev", servers=2, size="m1.small", provider="local"
    )
    assert result.env_id == "blog-dev"


def test_build_spec_takes_yaml_typed_values() -> None:
    result = spec.build_spec(
        "hello_world", "qa-2", servers="3", size="m1.tiny", provider="openstack"
    )
    assert (result.servers, result.size, result.provider) == (3, "m1.tiny", "openstack")


def test_default_provider_comes_from_settings() -> None:
    assert spec.build_spec("blog", "dev", default_provider="openstack").provider == "openstack"


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"app": None, "env": "dev"}, "app is missing"),
        ({"app": "Blog", "env": "dev"}, "not a valid app name"),
        ({"app": "blog\n", "env": "dev"}, "not a valid app name"),
        ({"app": "blog", "env": "dev\n"}, "not a valid environment name"),
        ({"app": "blog", "env": ""}, "env is missing"),
        ({"app": "blog", "env": "dev_1"}, "not a valid environment name"),
        ({"app": "blog", "env": 7}, "not a valid environment name"),
        ({"app": "blog", "env": "dev", "servers": "two"}, "not a whole number"),
        ({"app": "blog", "env": "dev", "servers": True}, "not a whole number"),
        ({"app": "blog", "env": "dev", "servers": 0}, "out of range"),
        ({"app": "blog", "env": "dev", "servers": spec.MAX_SERVERS + 1}, "out of range"),
        ({"app": "blog", "env": "dev", "size": "m1 small"}, "not a flavor name"),
        ({"app": "blog", "env": "dev", "provider": "aws"}, "not known"),
    ],
)
def test_bad_arguments_give_one_line(kwargs: dict, fragment: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        spec.build_spec(**kwargs)
    message = str(caught.value)
    assert fragment in message
    assert "\n" not in message
    assert ": " in message  # problem: fix


@pytest.mark.parametrize(
    ("value", "expected"),
    [(True, True), (False, False), ("yes", True), ("False", False), ("true", True)],
)
def test_parse_bool(value: object, expected: bool) -> None:
    assert spec.parse_bool("test", value) is expected


def test_parse_bool_refuses_other_values() -> None:
    with pytest.raises(InvalidRequest, match="test=1 is not true or false"):
        spec.parse_bool("test", 1)


def test_parse_target() -> None:
    assert spec.parse_target("blog", "dev") == ("blog", "dev")
    with pytest.raises(InvalidRequest):
        spec.parse_target("blog", None)


def test_reject_unknown_ignores_salt_dunders() -> None:
    spec.reject_unknown({"app": "blog", "__pub_user": "root"}, ("app", "env"))
    with pytest.raises(InvalidRequest, match="unknown arguments sevrers, szie"):
        spec.reject_unknown({"sevrers": 2, "szie": "x"}, ("app", "env"))


def test_vrrp_profile_is_optional_and_checked() -> None:
    assert spec.build_spec("blog", "dev").vrrp_profile is None
    assert spec.build_spec("blog", "dev", vrrp="fast").vrrp_profile == "fast"
    with pytest.raises(InvalidRequest, match="vrrp='turbo' is not a VRRP profile"):
        spec.build_spec("blog", "dev", vrrp="turbo")
