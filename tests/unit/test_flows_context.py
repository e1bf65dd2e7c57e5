"""What every workflow shares (gdl/flows/context.py): which provider holds an environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from gdl import envstore
from gdl.config import Settings
from gdl.errors import GdlError, NotFound
from gdl.flows import build, destroy
from gdl.flows.context import Context, env_provider, require_record
from gdl.spec import EnvSpec


@pytest.fixture
def ctx(tmp_path: Path) -> Context:
    settings = Settings(
        state_dir=tmp_path / "state",
        pki_dir=tmp_path / "pki",
        cache_dir=tmp_path / "cache",
        local={"bridge": "gdlut0", "cidr": "10.77.0.0/24", "state_dir": str(tmp_path / "local")},
    )
    return Context(settings=settings, salt=None, progress=lambda _: None)  # type: ignore[arg-type]


def test_an_environment_on_another_provider_is_refused(ctx: Context) -> None:
    envstore.save(
        ctx.settings.state_dir, envstore.new_record("blog", "dev", "local", 2, "m1.small")
    )
    with pytest.raises(GdlError, match="blog-dev lives on provider local, not openstack"):
        env_provider(ctx, "blog", "dev", "openstack")
    assert env_provider(ctx, "blog", "dev", "local").name == "local"
    assert env_provider(ctx, "blog", "dev").name == "local"


def test_without_a_record_the_provider_asked_for_or_the_default(ctx: Context) -> None:
    assert env_provider(ctx, "blog", "qa").name == ctx.settings.provider
    with pytest.raises(NotFound, match="build it first"):
        require_record(ctx.settings, "blog", "qa")


FAILURE_DOC = Path(__file__).resolve().parents[2] / "docs" / "failure.md"


def documented(line: str) -> bool:
    """True when docs/failure.md quotes ``line`` (however its text is wrapped)."""
    return " ".join(line.split()) in " ".join(FAILURE_DOC.read_text().split())


def test_destroy_on_another_provider_is_refused_as_documented(ctx: Context) -> None:
    envstore.save(
        ctx.settings.state_dir, envstore.new_record("blog", "dev", "local", 2, "m1.small")
    )
    with pytest.raises(GdlError) as refused:
        destroy.destroy(ctx, "blog", "dev", provider="openstack")
    assert documented(f"`{refused.value.line}`")


class NothingThere:
    """A provider with no server, accepting any request."""

    name = "openstack"

    def check(self, spec: EnvSpec) -> None:
        pass

    def list_servers(self, app: str | None = None, env: str | None = None) -> list:
        return []


def test_build_on_another_provider_is_refused_as_documented(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    envstore.save(
        ctx.settings.state_dir, envstore.new_record("blog", "dev", "local", 2, "m1.small")
    )
    monkeypatch.setattr(build.apps, "load_manifest", lambda apps_dir, app: None)
    ctx.provider = lambda name: NothingThere()  # type: ignore[method-assign]
    spec = EnvSpec(app="blog", env="dev", servers=2, size="m1.small", provider="openstack")
    with pytest.raises(GdlError) as refused:
        build.build(ctx, spec)
    assert documented(f"`{refused.value.line}`")
    assert envstore.load(ctx.settings.state_dir, "blog", "dev").provider == "local"
