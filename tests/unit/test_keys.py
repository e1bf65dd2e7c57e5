"""Minion keys preseeded on the master through Salt's key and cache APIs."""

from __future__ import annotations

from pathlib import Path

import pytest
import salt.cache
from cryptography.hazmat.primitives import serialization

from gdl import keys


@pytest.fixture(scope="module")
def pair() -> keys.KeyPair:
    # RSA generation is the slow part: one pair serves the module.
    return keys.generate()


@pytest.fixture
def master_keys(tmp_path: Path) -> keys.MasterKeys:
    return keys.MasterKeys.at(tmp_path / "pki", tmp_path / "cache")


def test_generate_gives_a_matching_pem_pair(pair: keys.KeyPair) -> None:
    private = serialization.load_pem_private_key(pair.private_pem.encode(), password=None)
    public = serialization.load_pem_public_key(pair.public_pem.encode())
    assert "PRIVATE KEY-----" in pair.private_pem
    assert pair.public_pem.startswith("-----BEGIN PUBLIC KEY-----")
    assert private.public_key().public_numbers() == public.public_numbers()
    assert public.key_size == 2048


def test_preseed_accepts_the_public_half_where_salt_key_finds_it(
    tmp_path: Path, master_keys: keys.MasterKeys
) -> None:
    made = master_keys.preseed("app-1-blog-dev")
    assert (tmp_path / "pki" / "minions" / "app-1-blog-dev").read_text() == made.public_pem
    assert master_keys.public_key("app-1-blog-dev") == made.public_pem
    assert "PRIVATE KEY" in made.private_pem


def test_preseed_keeps_an_id_with_an_underscore(master_keys: keys.MasterKeys) -> None:
    made = master_keys.preseed("app-0-hello_world-qa")
    assert master_keys.public_key("app-0-hello_world-qa") == made.public_pem
    assert master_keys.minions() == {"app-0-hello_world-qa"}


def test_preseed_replaces_a_stale_key(master_keys: keys.MasterKeys) -> None:
    first = master_keys.preseed("lb-0-blog-dev")
    second = master_keys.preseed("lb-0-blog-dev")
    assert first.public_pem != second.public_pem
    assert master_keys.public_key("lb-0-blog-dev") == second.public_pem


def test_accept_files_a_given_key_and_clears_other_states(
    tmp_path: Path, master_keys: keys.MasterKeys, pair: keys.KeyPair
) -> None:
    pending = tmp_path / "pki" / "minions_pre"
    pending.mkdir(parents=True)
    (pending / "app-0-blog-dev").write_text(pair.public_pem)
    master_keys.accept("app-0-blog-dev", pair.public_pem)
    assert master_keys.public_key("app-0-blog-dev") == pair.public_pem
    assert not (pending / "app-0-blog-dev").exists()
    assert master_keys.minions() == {"app-0-blog-dev"}


def test_forget_removes_the_key_in_every_state(
    tmp_path: Path, master_keys: keys.MasterKeys, pair: keys.KeyPair
) -> None:
    master_keys.accept("app-0-blog-dev", pair.public_pem)
    assert master_keys.forget("app-0-blog-dev") is True
    assert master_keys.minions() == set()
    assert not (tmp_path / "pki" / "minions" / "app-0-blog-dev").exists()
    assert master_keys.forget("app-0-blog-dev") is False


@pytest.mark.parametrize(
    "minion_id", ["", "../evil", "a/../../b", "/etc/passwd", ".", "..", ".hidden", "a\0b"]
)
def test_ids_that_walk_out_are_refused(
    tmp_path: Path, master_keys: keys.MasterKeys, minion_id: str, pair: keys.KeyPair
) -> None:
    with pytest.raises(ValueError, match="not a minion id"):
        master_keys.accept(minion_id, pair.public_pem)
    with pytest.raises(ValueError, match="not a minion id"):
        master_keys.forget(minion_id)
    with pytest.raises(ValueError, match="not a minion id"):
        master_keys.preseed(minion_id)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_minions_and_env_minions(master_keys: keys.MasterKeys, pair: keys.KeyPair) -> None:
    for minion_id in ("app-0-blog-dev", "lb-1-blog-dev", "app-0-blog-prod", "salt-master"):
        master_keys.accept(minion_id, pair.public_pem)
    assert master_keys.minions() == {
        "app-0-blog-dev",
        "lb-1-blog-dev",
        "app-0-blog-prod",
        "salt-master",
    }
    assert master_keys.env_minions("blog", "dev") == {"app-0-blog-dev", "lb-1-blog-dev"}


def test_forget_drops_only_that_minions_cached_data(
    master_keys: keys.MasterKeys, pair: keys.KeyPair
) -> None:
    cache = salt.cache.factory(master_keys.opts)
    for minion_id in ("app-0-blog-dev", "app-0-blog-dev2"):
        master_keys.accept(minion_id, pair.public_pem)
        for bank in ("grains", "pillar", "mine"):
            cache.store(bank, minion_id, {"id": minion_id})
    cache.store("pillar", "app-0-blog-dev:base", {"secret": "x"})
    assert master_keys.env_cached("blog", "dev") == {"app-0-blog-dev"}
    assert master_keys.forget("app-0-blog-dev") is True
    assert master_keys.cached_minions() == {"app-0-blog-dev2"}
    assert sorted(cache.list("pillar")) == ["app-0-blog-dev2"]


def test_many_minions_are_forgotten_at_once(
    master_keys: keys.MasterKeys, pair: keys.KeyPair
) -> None:
    names = [f"app-{i}-blog-dev" for i in range(5)]
    for name in [*names, "app-0-blog-prod"]:
        master_keys.accept(name, pair.public_pem)
    assert master_keys.forget(*names[:3], "app-9-blog-dev") is True
    assert master_keys.minions() == {*names[3:], "app-0-blog-prod"}
    assert master_keys.forget() is False
