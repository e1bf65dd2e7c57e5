"""Minion keys, made and accepted on the master before a server exists.

This is what salt-cloud calls preseeding: the master makes the minion's key
pair, files the public half as accepted, and the server receives the pair at
boot.  No key is ever auto-accepted, and a server's key goes with it.

Everything goes through Salt's own key and cache APIs (:func:`salt.crypt.gen_keys`,
the key store of ``keys.cache_driver``, :class:`salt.key.Key`, :mod:`salt.cache`),
so a master that keeps its keys or its minion data in another cache backend works
the same.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import salt.cache
import salt.config
import salt.crypt
import salt.exceptions
import salt.key
import salt.utils.crypt

from gdl import naming

# What the master caches of each minion; its pillar may hold an environment's secrets.
MINION_DATA_BANKS = ("grains", "pillar", "mine")


@dataclass(frozen=True)
class KeyPair:
    public_pem: str
    private_pem: str


def generate(bits: int = 2048) -> KeyPair:
    """A new RSA key pair in the PEM forms salt-minion reads; nothing is stored."""
    private_pem, public_pem = salt.crypt.gen_keys(bits)
    return KeyPair(public_pem=_text(public_pem), private_pem=_text(private_pem))


def _text(pem: str | bytes) -> str:
    return pem.decode() if isinstance(pem, bytes) else pem


def _check_minion_id(minion_id: str) -> None:
    # Keys are stored by minion id: never let a name walk out of the store.
    if naming.parse_server_name(minion_id) is None and (
        not minion_id or "/" in minion_id or minion_id.startswith(".") or "\0" in minion_id
    ):
        raise ValueError(f"not a minion id: {minion_id!r}")


def _belongs(minion_id: str, app: str, env: str) -> bool:
    parsed = naming.parse_server_name(minion_id)
    return parsed is not None and parsed.app == app and parsed.env == env


class MasterKeys:
    """The master's minion keys and what it caches of each minion."""

    def __init__(self, opts: dict[str, Any]) -> None:
        merged = {**salt.config.DEFAULT_MASTER_OPTS, **opts}
        merged.setdefault("__role", "master")
        # Salt's key store names the master's own keys after its id.
        merged["id"] = merged.get("id") or "master"
        if merged.get("__role") not in ("master", "syndic"):
            merged["__role"] = "master"
        # A deleted server takes its key with it; rotating the master's AES key on
        # top (what salt-key -d does by default) would make every minion of every
        # environment authenticate again for nothing.
        merged["rotate_aes_key"] = False
        self.opts = merged
        self._key_store = salt.cache.Cache(merged, driver=merged["keys.cache_driver"])
        self._minion_data = salt.cache.factory(merged)

    @classmethod
    def at(
        cls,
        pki_dir: str | os.PathLike[str],
        cache_dir: str | os.PathLike[str],
        sock_dir: str | os.PathLike[str] | None = None,
    ) -> MasterKeys:
        """The keys of the master with these directories (its other options: Salt's defaults).

        Without ``sock_dir`` key events go nowhere: no running master hears them.
        """
        return cls(
            {
                "pki_dir": str(pki_dir),
                "cachedir": str(cache_dir),
                "sock_dir": str(sock_dir or os.path.join(cache_dir, ".no-master")),
            }
        )

    def preseed(self, minion_id: str) -> KeyPair:
        """A new key pair for ``minion_id``, its public half accepted (replacing an old one)."""
        # Not the key.gen_accept wheel function: it rewrites ids as host names
        # (hello_world -> helloworld), and app names may hold an underscore.
        _check_minion_id(minion_id)
        pair = generate()
        self.accept(minion_id, pair.public_pem)
        return pair

    def accept(self, minion_id: str, public_pem: str) -> None:
        """File ``public_pem`` (a pair salt-cloud made) as the accepted key of ``minion_id``."""
        _check_minion_id(minion_id)
        self._key_store.flush("denied_keys", minion_id)
        self._key_store.store("keys", minion_id, {"pub": public_pem, "state": "accepted"})

    def master_finger(self) -> str:
        """The fingerprint of the master's public key, as minions check it (``master_finger``).

        What ``salt-key -F master`` prints for ``master.pub``, with the
        minions' hash type (sha256, Salt's default); '' when the master has no
        key yet.
        """
        path = os.path.join(self.opts["pki_dir"], "master.pub")
        if os.path.isfile(path):
            return salt.utils.crypt.pem_finger(path, sum_type="sha256")
        pem = self._key_store.fetch("master_keys", f"{self.opts['id']}.pub") or ""
        body = [line for line in _text(pem).splitlines(keepends=True) if line.strip()][1:-1]
        return salt.utils.crypt.pem_finger(key="".join(body), sum_type="sha256") if body else ""

    def public_key(self, minion_id: str) -> str | None:
        """The accepted public key of ``minion_id``, if any."""
        entry = self._key_store.fetch("keys", minion_id) or {}
        return entry.get("pub") if entry.get("state") == "accepted" else None

    def forget(self, *minion_ids: str) -> bool:
        """Delete every key of ``minion_ids`` and what the master cached of them; True if any.

        All at once: Salt's delete_key opens a client and rereads the key store
        on every call, which made a destroy of 50 servers spend 3.7 s on keys.
        """
        for minion_id in minion_ids:
            _check_minion_id(minion_id)
        if not minion_ids:
            return False
        with salt.key.Key(self.opts) as key:
            matches = key.list_match(list(minion_ids))
            found = bool(matches)
            if found:
                key.delete_key(match_dict=matches)
        for bank in MINION_DATA_BANKS:
            for cached in self._cached(bank):
                # A pillar entry may carry its pillarenv: <id>:<pillarenv>.
                if cached.split(":")[0] in minion_ids:
                    self._minion_data.flush(bank, cached)
                    found = True
        return found

    def minions(self) -> set[str]:
        """Every minion id with a key in any state."""
        with salt.key.Key(self.opts) as key:
            return {m for ids in key.list_keys().values() for m in ids}

    def cached_minions(self) -> set[str]:
        """Every minion id the master caches grains, pillar or mine data of."""
        return {c.split(":")[0] for bank in MINION_DATA_BANKS for c in self._cached(bank)}

    def env_minions(self, app: str, env: str) -> set[str]:
        """Minion ids with keys on the master that belong to (app, env) by name."""
        return {m for m in self.minions() if _belongs(m, app, env)}

    def env_cached(self, app: str, env: str) -> set[str]:
        """Minion ids of (app, env) that the master still caches data of."""
        return {m for m in self.cached_minions() if _belongs(m, app, env)}

    def _cached(self, bank: str) -> list[str]:
        try:
            return list(self._minion_data.list(bank))
        except salt.exceptions.SaltCacheError:
            return []
