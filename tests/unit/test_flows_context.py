"""What every workflow shares (gdl/flows/context.py): which provider holds an environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from gdl import envstore
from gdl.config import Settings
from gdl.errors import GdlError, NotFound
from gdl.flows.context import Context, env_provider, require_record


@pytest.fixture
def ctx(tmp_path: Path) -> Context:
    settings = Settings(
        state_dir=tmp_path / "state",
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
