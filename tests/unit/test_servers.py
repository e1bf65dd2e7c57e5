"""The one path every server takes (gdl/servers.py): names checked, keys made and cleaned up."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest
import salt.crypt
import salt.utils.crypt
import yaml

from gdl import keys, servers, userdata
from gdl.errors import MinionsSilent, NameClash, ProviderError
from gdl.flows import build
from gdl.flows.context import Context
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


class ConsoleProvider(FakeProvider):
    """A FakeProvider whose servers' consoles hold ``consoles`` (name -> lines)."""

    def __init__(self, consoles: dict[str, list[str]]) -> None:
        super().__init__()
        self.consoles = consoles

    def console_tail(self, name, lines=20):
        return self.consoles.get(name, [])[-lines:]


def silent(names, timeout):
    raise MinionsSilent(names[1:], timeout)


def test_a_silent_minions_error_ends_with_its_servers_console(master_keys):
    console = [f"line {i}" for i in range(1, 31)] + ["\x1b[31mcloud-init\x1b[0m: no route\x07"]
    provider = ConsoleProvider({"app-1-blog-dev": console})
    with pytest.raises(MinionsSilent) as caught:
        servers.make(
            provider,
            master_keys,
            [new("app-0-blog-dev"), new("app-1-blog-dev"), new("app-2-blog-dev")],
            master_address="",
            wait=silent,
        )
    first, *evidence = str(caught.value).splitlines()
    assert first == (
        "the minions of app-1-blog-dev, app-2-blog-dev did not answer within 7 s: "
        "check the servers' console or log, then run the build again: "
        "it replaces a server whose minion never joined"
    )
    # Per server its console's last line, the lines before it indented (20 in all).
    assert evidence[0] == "app-1-blog-dev: cloud-init: no route"
    assert evidence[1:20] == [f"    line {i}" for i in range(12, 31)]
    assert evidence[20:] == ["app-2-blog-dev: no console output"]
    assert caught.value.line == first  # the one line, for whatever needs only that
    # The silent servers stay, and their keys: the next build replaces them.
    assert set(provider.made) == {"app-0-blog-dev", "app-1-blog-dev", "app-2-blog-dev"}
    assert master_keys.minions() == set(provider.made)


class Pinger:
    def __init__(self, answering: set[str]) -> None:
        self.answering = answering
        self.asked: list[list[str]] = []

    def ping(self, minions, timeout):
        self.asked.append(sorted(minions))
        return self.answering & set(minions)


def test_servers_whose_minion_never_joined_are_the_ones_to_replace(master_keys):
    provider = FakeProvider()
    names = ["app-0-blog-dev", "app-1-blog-dev", "app-2-blog-dev", "app-3-blog-dev"]
    servers.make(provider, master_keys, [new(n) for n in names], master_address="")
    # app-0 joined (the master caches its grains); app-1 has a key and nothing cached
    # but answers (a cleared cache); app-2 is silent; app-3 lost its key.
    master_keys._minion_data.store("grains", "app-0-blog-dev", {"id": "app-0-blog-dev"})
    master_keys.forget("app-3-blog-dev")
    pinger = Pinger({"app-1-blog-dev"})
    existing = provider.list_servers("blog", "dev")
    assert servers.never_joined(master_keys, pinger, existing) == [
        "app-2-blog-dev",
        "app-3-blog-dev",
    ]
    assert pinger.asked == [["app-1-blog-dev", "app-2-blog-dev"]]
    # Only running servers are judged (a broken one is replaced anyway).
    assert servers.never_joined(master_keys, pinger, []) == []


def test_the_vrrp_pairs_plan_asks_nothing_of_the_app_servers_still_booting(
    master_keys, monkeypatch
):
    provider = FakeProvider()
    names = ["app-0-blog-dev", "app-1-blog-dev", "lb-0-blog-dev", "lb-1-blog-dev"]
    servers.make(provider, master_keys, [new(n) for n in names], master_address="")
    # No minion has joined yet: the app servers were made a moment ago, the pair before.
    pinger = Pinger(set())
    monkeypatch.setattr(build, "master_keys", lambda ctx: master_keys)
    ctx = Context(settings=None, salt=pinger, progress=lambda line: None)  # type: ignore[arg-type]
    plan = build.current_plan(ctx, provider, "blog", "dev", 2, role="lb")
    assert pinger.asked == [["lb-0-blog-dev", "lb-1-blog-dev"]]
    assert plan.replace == ("lb-0-blog-dev", "lb-1-blog-dev") and plan.create == ()
