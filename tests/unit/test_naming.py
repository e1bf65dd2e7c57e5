"""Server names, ownership marks and derived identifiers."""

from __future__ import annotations

import pytest

from gdl import naming


@pytest.mark.parametrize(
    ("role", "index", "app", "env", "expected"),
    [
        ("app", 0, "blog", "dev", "app-0-blog-dev"),
        ("lb", 1, "hello_world", "qa-2", "lb-1-hello_world-qa-2"),
        ("app", 49, "a", "p", "app-49-a-p"),
    ],
)
def test_server_name_reads_back(role: str, index: int, app: str, env: str, expected: str) -> None:
    name = naming.server_name(role, index, app, env)
    assert name == expected
    assert naming.parse_server_name(name) == naming.ServerName(
        app=app, env=env, role=role, index=index
    )


def test_server_name_refuses_unknown_role() -> None:
    with pytest.raises(ValueError, match="unknown role"):
        naming.server_name("db", 0, "blog", "dev")


@pytest.mark.parametrize(
    "name",
    [
        "",
        "web-0-blog-dev",  # unknown role
        "app-01-blog-dev",  # leading zero
        "app-1000-blog-dev",  # index too long
        "app-0-Blog-dev",  # upper case
        "app-0-blog-dev-",  # env ends with '-'
        "app-0-blog-d_v",  # '_' in env
        "app-0-blog",  # no env
        "app-0-blog-dev\n",
        "salt-master",
    ],
)
def test_parse_server_name_ignores_foreign_names(name: str) -> None:
    assert naming.parse_server_name(name) is None


def test_env_with_dashes_parses_unambiguously() -> None:
    parsed = naming.parse_server_name("lb-0-shop_front-qa-eu-1")
    assert parsed is not None
    assert (parsed.app, parsed.env, parsed.role, parsed.index) == ("shop_front", "qa-eu-1", "lb", 0)


def test_ownership_marks() -> None:
    marks = naming.ownership("blog", "dev", role="lb")
    assert marks == {"gdl_app": "blog", "gdl_env": "dev", "gdl_role": "lb"}
    assert naming.owned_by(marks, "blog", "dev")
    assert not naming.owned_by(marks, "blog", "prod")
    assert not naming.owned_by({}, "blog", "dev")
    assert "gdl_role" not in naming.ownership("blog", "dev")


def test_short_hash_is_stable_and_separates_parts() -> None:
    assert naming.short_hash("a", "b") == naming.short_hash("a", "b")
    assert naming.short_hash("ab", "c") != naming.short_hash("a", "bc")
    assert len(naming.short_hash("x", length=6)) == 6


def test_router_id_in_vrrp_range() -> None:
    ids = {naming.preferred_router_id("blog", f"env{i}") for i in range(300)}
    assert all(1 <= vrid <= 255 for vrid in ids)
    assert naming.preferred_router_id("blog", "dev") == naming.preferred_router_id("blog", "dev")


def test_env_id_and_lock_name() -> None:
    assert naming.env_id("blog", "dev") == "blog-dev"
    assert naming.lock_name("blog", "dev") == "gdl-blog-dev"
