"""The one path every server takes (gdl/servers.py): names checked, keys made and cleaned up."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest
import salt.crypt
import salt.utils.crypt
import yaml

from gdl import keys, servers, userdata
from gdl.errors import NameClash, ProviderError
from gdl.providers.base import RUNNING, EnvNetwork, Provider, Server, ServerRequest, no_progress


class FakeProvider(Provider):
    """Makes servers in memory; names in ``failing`` fail to boot."""

    name = "fake"
    minion_timeout = 7.0

    def __init__(self, failing: Iterable[str] = ()) -> None:
        self.made: dict[str, Server] = {}
        self.requests: list[ServerRequest] = []
        self.failing = set(failing)

    def create_servers(self, requests: Sequence[ServerRequest], timeout=None, progress=no_progress):
        self.requests += requests
        for request in requests:
            if request.name not in self.failing:
                self.made[request.name] = Server(
                    request.name,
                    request.app,
                    request.env,
                    request.role,
                    RUNNING,
                    "10.0.0.9",
                    request.size,
                    request.name,
                )
        if self.failing & {r.name for r in requests}:
            raise ProviderError("did not boot: " + ", ".join(sorted(self.failing)))
        return [self.made[r.name] for r in requests]

    def list_servers(self, app=None, env=None):
        return [s for s in self.made.values() if app in (None, s.app) and env in (None, s.env)]

    def delete_servers(self, names, timeout=300, progress=no_progress):
        return [n for n in names if self.made.pop(n, None) is not None]

    def sizes(self):
        return ["m1.small"]

    def check(self, spec):
        pass

    def ensure_env(self, app, env):
        return EnvNetwork("10.0.0.2", "10.0.0.2", "10.0.0.0/24", 1, "10.0.0.1")

    def find_env(self, app, env):
        return None

    def teardown_env(self, app, env):
        pass

    def images(self):
        return {}

    def flavors(self):
        return {}

    def zones(self):
        return {}


@pytest.fixture
def master_keys(tmp_path: Path) -> keys.MasterKeys:
    return keys.MasterKeys.at(tmp_path / "pki", tmp_path / "cache")


def new(name: str, pair: keys.KeyPair | None = None) -> servers.NewServer:
    return servers.NewServer(name, "blog", "dev", name.split("-")[0], "m1.small", pair)


def test_new_servers_get_preseeded_keys_and_are_waited_for(master_keys):
    provider = FakeProvider()
    waited: list[tuple[list[str], float]] = []
    made = servers.make(
        provider,
        master_keys,
        [new("app-0-blog-dev"), new("app-1-blog-dev")],
        master_address="10.0.0.1",
        wait=lambda names, timeout: waited.append((names, timeout)),
    )
    assert [s.name for s in made] == ["app-0-blog-dev", "app-1-blog-dev"]
    assert waited == [(["app-0-blog-dev", "app-1-blog-dev"], 7.0)]
    for request in provider.requests:
        assert master_keys.public_key(request.name) == request.minion_public_key
        assert request.master_address == "10.0.0.1"


def test_a_pair_salt_cloud_made_is_accepted_as_is(master_keys):
    made = keys.generate()
    provider = FakeProvider()
    servers.make(provider, master_keys, [new("lb-0-blog-dev", made)], master_address="")
    assert master_keys.public_key("lb-0-blog-dev") == made.public_pem
    assert provider.requests[0].minion_private_key == made.private_pem


def test_a_taken_name_is_refused_and_the_running_minion_keeps_its_key(master_keys):
    provider = FakeProvider()
    servers.make(provider, master_keys, [new("lb-0-blog-dev")], master_address="")
    running_key = master_keys.public_key("lb-0-blog-dev")
    with pytest.raises(NameClash, match="lb-0-blog-dev exists already"):
        servers.make(provider, master_keys, [new("lb-0-blog-dev")], master_address="")
    assert master_keys.public_key("lb-0-blog-dev") == running_key
    assert len(provider.requests) == 1


def test_servers_that_failed_lose_their_keys_the_others_keep_theirs(master_keys):
    provider = FakeProvider(failing=["app-1-blog-dev"])
    with pytest.raises(ProviderError, match="did not boot"):
        servers.make(
            provider, master_keys, [new("app-0-blog-dev"), new("app-1-blog-dev")], master_address=""
        )
    assert master_keys.minions() == {"app-0-blog-dev"}


def test_remove_deletes_servers_and_forgets_their_keys(master_keys):
    provider = FakeProvider()
    servers.make(provider, master_keys, [new("app-0-blog-dev")], master_address="")
    assert servers.remove(provider, master_keys, ["app-0-blog-dev", "app-0-blog-dev"]) == [
        "app-0-blog-dev"
    ]
    assert master_keys.minions() == set()
    assert provider.list_servers() == []


def test_new_servers_are_given_the_masters_key_fingerprint(tmp_path, master_keys):
    # The minion compares it with the key the master shows before trusting it.
    pki = tmp_path / "pki"
    pki.mkdir(parents=True, exist_ok=True)
    _private_pem, public_pem = salt.crypt.gen_keys(2048)
    (pki / "master.pub").write_bytes(
        public_pem if isinstance(public_pem, bytes) else public_pem.encode()
    )
    expected = salt.utils.crypt.pem_finger(str(pki / "master.pub"), sum_type="sha256")
    assert master_keys.master_finger() == expected and len(expected) == 95
    provider = FakeProvider()
    servers.make(provider, master_keys, [new("lb-0-blog-dev")], master_address="10.0.0.1")
    (request,) = provider.requests
    assert request.master_finger == expected
    config = yaml.safe_load(userdata.minion_config(request))
    assert config["master_finger"] == expected
