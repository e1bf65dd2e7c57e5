"""Minion keys preseeded on the master's pki dir."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from gdl import keys


@pytest.fixture(scope="module")
def pair() -> keys.KeyPair:
    # RSA generation is the slow part: one pair serves the module.
    return keys.generate()


def test_generate_gives_a_matching_pem_pair(pair: keys.KeyPair) -> None:
    private = serialization.load_pem_private_key(pair.private_pem.encode(), password=None)
    public = serialization.load_pem_public_key(pair.public_pem.encode())
    assert pair.private_pem.startswith("-----BEGIN RSA PRIVATE KEY-----")
    assert pair.public_pem.startswith("-----BEGIN PUBLIC KEY-----")
    assert private.public_key().public_numbers() == public.public_numbers()
    assert public.key_size == 2048


def test_accept_files_the_key_and_clears_other_states(tmp_path: Path, pair: keys.KeyPair) -> None:
    (tmp_path / "minions_pre").mkdir()
    (tmp_path / "minions_pre" / "app-0-blog-dev").write_text("old")
    (tmp_path / "minions_rejected").mkdir()
    (tmp_path / "minions_rejected" / "app-0-blog-dev").write_text("old")
    path = keys.accept(tmp_path, "app-0-blog-dev", pair.public_pem)
    assert path == tmp_path / "minions" / "app-0-blog-dev"
    assert path.read_text() == pair.public_pem
    assert path.stat().st_mode & 0o777 == 0o644
    assert not (tmp_path / "minions_pre" / "app-0-blog-dev").exists()
    assert not (tmp_path / "minions_rejected" / "app-0-blog-dev").exists()
    assert [p.name for p in (tmp_path / "minions").iterdir()] == ["app-0-blog-dev"]


def test_accept_replaces_an_older_key(tmp_path: Path, pair: keys.KeyPair) -> None:
    keys.accept(tmp_path, "lb-0-blog-dev", "old key")
    keys.accept(tmp_path, "lb-0-blog-dev", pair.public_pem)
    assert (tmp_path / "minions" / "lb-0-blog-dev").read_text() == pair.public_pem


def test_preseed_accepts_the_generated_public_key(tmp_path: Path) -> None:
    generated = keys.preseed(tmp_path, "app-1-blog-dev")
    assert (tmp_path / "minions" / "app-1-blog-dev").read_text() == generated.public_pem


def test_remove_forgets_every_state(tmp_path: Path, pair: keys.KeyPair) -> None:
    keys.accept(tmp_path, "app-0-blog-dev", pair.public_pem)
    (tmp_path / "minions_denied").mkdir()
    (tmp_path / "minions_denied" / "app-0-blog-dev").write_text("x")
    assert keys.remove(tmp_path, "app-0-blog-dev") is True
    assert keys.known_minions(tmp_path) == set()
    assert keys.remove(tmp_path, "app-0-blog-dev") is False


@pytest.mark.parametrize(
    "minion_id", ["", "../evil", "a/../../b", "/etc/passwd", ".", "..", ".hidden", "a\0b"]
)
def test_ids_that_walk_out_are_refused(tmp_path: Path, minion_id: str, pair: keys.KeyPair) -> None:
    pki = tmp_path / "pki"
    with pytest.raises(ValueError, match="not a minion id"):
        keys.accept(pki, minion_id, pair.public_pem)
    with pytest.raises(ValueError, match="not a minion id"):
        keys.remove(pki, minion_id)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_known_and_env_minions(tmp_path: Path, pair: keys.KeyPair) -> None:
    for minion_id in ("app-0-blog-dev", "lb-1-blog-dev", "app-0-blog-prod", "salt-master"):
        keys.accept(tmp_path, minion_id, pair.public_pem)
    (tmp_path / "minions_pre").mkdir()
    (tmp_path / "minions_pre" / "app-1-blog-dev").write_text("pending")
    (tmp_path / "minions" / ".app-9-blog-dev.tmp").write_text("partial")
    assert keys.known_minions(tmp_path) == {
        "app-0-blog-dev",
        "lb-1-blog-dev",
        "app-0-blog-prod",
        "salt-master",
        "app-1-blog-dev",
    }
    assert keys.env_minions(tmp_path, "blog", "dev") == {
        "app-0-blog-dev",
        "lb-1-blog-dev",
        "app-1-blog-dev",
    }
    assert keys.known_minions(tmp_path / "missing") == set()


def test_remove_cached_data_forgets_only_that_minions_grains_and_pillar(tmp_path: Path) -> None:
    for bank in ("grains", "pillar"):
        (tmp_path / bank).mkdir()
        for name in ("app-0-blog-dev.p", "app-0-blog-dev2.p", "app-0-blog-dev:base.p"):
            (tmp_path / bank / name).write_text("x")
    assert keys.cached_minions(tmp_path) == {"app-0-blog-dev", "app-0-blog-dev2"}
    assert keys.remove_cached_data(tmp_path, "app-0-blog-dev") is True
    assert sorted(p.name for p in (tmp_path / "pillar").iterdir()) == ["app-0-blog-dev2.p"]
    assert keys.cached_minions(tmp_path) == {"app-0-blog-dev2"}
    assert keys.remove_cached_data(tmp_path, "app-0-blog-dev") is False
