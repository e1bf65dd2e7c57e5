"""The workflow's view of a running Salt master, for use inside a runner."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import salt.client
import salt.cloud

from gdl.errors import ProviderError


class MasterOps:
    """SaltOps over the master the runner runs in."""

    def __init__(self, opts: dict[str, Any], orchestrate: Callable[..., Any]) -> None:
        self.opts = opts
        self._orchestrate = orchestrate
        self._client: salt.client.LocalClient | None = None

    @property
    def client(self) -> salt.client.LocalClient:
        if self._client is None:
            self._client = salt.client.get_local_client(mopts=self.opts)
        return self._client

    def ping(self, minions: list[str], timeout: float) -> set[str]:
        if not minions:
            return set()
        returns = self.client.cmd(
            minions, "test.ping", tgt_type="list", timeout=max(1, int(timeout))
        )
        return {minion for minion, answer in (returns or {}).items() if answer is True}

    def call(self, minions: list[str], function: str, args: list[Any], timeout: float = 10) -> dict:
        if not minions:
            return {}
        return (
            self.client.cmd(minions, function, arg=args, tgt_type="list", timeout=int(timeout))
            or {}
        )

    def apply_state(
        self, minions: list[str], sls: str, pillar: dict[str, Any], timeout: float = 600
    ) -> dict[str, Any]:
        if not minions:
            return {}
        return (
            self.client.cmd(
                minions,
                "state.apply",
                arg=[sls],
                kwarg={"pillar": pillar},
                tgt_type="list",
                timeout=int(timeout),
            )
            or {}
        )

    def cloud_create(self, profile: str, names: list[str], overrides: dict[str, Any]) -> None:
        config_dir = os.path.dirname(self.opts.get("conf_file") or "/etc/salt/master")
        client = salt.cloud.CloudClient(path=os.path.join(config_dir, "cloud"))
        returns = client.profile(profile, names=names, vm_overrides=overrides, parallel=True)
        failed = []
        for name in names:
            answer = (returns or {}).get(name)
            if not isinstance(answer, dict) or answer.get("Error") or answer.get("error"):
                failed.append(f"{name}: {answer!r}"[:300])
        if failed:
            raise ProviderError(
                f"salt-cloud could not make {'; '.join(failed)}",
                "fix the cause and run the build again",
            )

    def orchestrate(self, sls: str, pillar: dict[str, Any], test: bool) -> tuple[bool, Any]:
        result = self._orchestrate(sls, pillar=pillar, test=test)
        code = result.get("retcode", 0) if isinstance(result, dict) else 1
        return code == 0, result

    def lb_status(self, lbs: list[str], vip: str) -> dict[str, Any]:
        holders = self.call(lbs, "gdl_lb.holds_vip", [vip])
        vrrp_master = next((lb for lb in sorted(holders) if holders[lb] is True), None)
        backends = self.call([vrrp_master], "gdl_lb.servers", []) if vrrp_master else {}
        return {
            "vip_holder": vrrp_master,
            "backends": backends.get(vrrp_master) if vrrp_master else None,
        }
