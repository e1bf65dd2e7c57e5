"""Real salt-master and salt-minion daemons, each in its own temporary root.

Every daemon's configuration, keys, cache, sockets and logs live under the root it
is given; it listens only on the interface it is given (127.0.0.1 by default) and
on free ports, so several test runs share one machine without meeting.  Daemons
run in the foreground as children of the test process, each in its own session,
so they can be stopped by PID and reaped; anything a daemon forked that is still
alive at stop (its process group, or any process naming its config dir) is
killed too (:mod:`gdl_harness.salt_process`).

Usage::

    master = SaltMaster(tmp_path / "master")
    master.start()
    minion = SaltMinion(tmp_path / "minion", master, "app-1-blog-dev")
    minion.start()
    print(master.salt("app-1-blog-dev", "test.ping").stdout)
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from gdl import keys
from gdl.config import Settings
from gdl_harness.salt_process import (
    DaemonError,
    SaltDaemon,
    free_port,
    port_open,
    run_client,
    salt_script,
)

# The source tree gdl runs from (states/, pillar/, apps/, cloud configs): the masters serve it.
REPO_ROOT = Settings().source_dir

DEFAULT_COMMAND_TIMEOUT = 120.0

# The same leftovers bootstrap.sh keeps out of the master's file lists.
FILE_IGNORE_REGEX = (
    r"(^|/)\.(git|venv|tox|pytest_cache|ruff_cache)(/|$)",
    r"(^|/)(__pycache__|build|dist|[^/]*\.egg-info)(/|$)",
)


def file_roots(state_dir: Path) -> dict[str, list[str]]:
    """The master's file_roots as bootstrap.sh writes them: what minions fetch, no more.

    ``states/`` holds the roles, top.sls, the orchestration (``states/orch``)
    and gdl_lb (``states/_modules``); ``<state_dir>/files`` the release archives.
    """
    return {"base": [str(REPO_ROOT / "states"), str(state_dir / "files")]}


def pillar_roots(state_dir: Path) -> dict[str, list[str]]:
    """The master's pillar_roots as bootstrap.sh writes them."""
    return {"base": [str(REPO_ROOT / "pillar"), str(state_dir / "pillar")]}


def _write_yaml(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, default_flow_style=False, sort_keys=True))


class SaltMaster(SaltDaemon):
    """A salt-master on ``interface`` with gdl's file and pillar roots."""

    script = "salt-master"
    role = "master"

    def __init__(
        self,
        root: Path,
        interface: str = "127.0.0.1",
        *,
        gdl_settings: dict[str, Any] | None = None,
        extra_config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(root)
        self.interface = interface
        self.gdl_settings = dict(gdl_settings or {})
        self.extra_config = dict(extra_config or {})
        self.publish_port = free_port(interface)
        self.ret_port = free_port(interface)
        self.package_port = free_port(interface)
        self.write_config()

    @property
    def state_dir(self) -> Path:
        return self.root / "var" / "lib" / "gdl"

    @property
    def address(self) -> str:
        return self.interface

    def config(self) -> dict[str, Any]:
        """The master configuration this object writes."""
        config = self.common_config()
        config.update(
            {
                "interface": self.interface,
                "publish_port": self.publish_port,
                "ret_port": self.ret_port,
                "file_roots": file_roots(self.state_dir),
                "pillar_roots": pillar_roots(self.state_dir),
                "file_ignore_regex": list(FILE_IGNORE_REGEX),
                "auto_accept": False,
                "open_mode": False,
                # As bootstrap.sh writes it.
                "lazy_loader_strict_matching": True,
                "worker_threads": 2,
                "job_cache": True,
                "keep_jobs_seconds": 3600,
                # The servers' package source, as bootstrap.sh enables it.
                "engines": [{"gdl_package_source": {}}],
                "gdl": {
                    "state_dir": str(self.state_dir),
                    "source_dir": str(REPO_ROOT),
                    "package_port": self.package_port,
                    **self.gdl_settings,
                },
            }
        )
        config.update(self.extra_config)
        return config

    def write_config(self) -> None:
        self.state_dir.joinpath("pillar").mkdir(parents=True, exist_ok=True)
        self.pki_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write_yaml(self.conf_file, self.config())

    def start(self, timeout: float = 60.0) -> None:
        """Start the master; return once its request port answers."""
        for attempt in range(2):
            self._spawn()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    break
                if port_open(self.interface, self.ret_port) and port_open(
                    self.interface, self.publish_port
                ):
                    return
                time.sleep(0.1)
            died = self._died_message()
            self.stop()
            # Another run may have taken a port between free_port() and the bind.
            if attempt == 0 and "Address already in use" in died:
                self.publish_port = free_port(self.interface)
                self.ret_port = free_port(self.interface)
                self.package_port = free_port(self.interface)
                self.write_config()
                continue
            raise DaemonError(f"salt-master in {self.root} did not start{died}")

    # Commands against this master -----------------------------------------------
    def command(
        self,
        script: str,
        *args: str,
        check: bool = False,
        timeout: float = DEFAULT_COMMAND_TIMEOUT,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a Salt client command (``salt-run`` ...) with this master's config."""
        cmd = [salt_script(script), "-c", str(self.config_dir), *map(str, args)]
        result = run_client(cmd, timeout, env=env, cwd=str(self.root))
        if check and result.returncode != 0:
            raise DaemonError(
                f"{' '.join(cmd)} exited {result.returncode}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result

    def run(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """``salt-run -c <config_dir> ARGS``."""
        return self.command("salt-run", *args, **kwargs)

    def salt(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """``salt -c <config_dir> ARGS``."""
        return self.command("salt", *args, **kwargs)

    def salt_key(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """``salt-key -c <config_dir> ARGS``."""
        return self.command("salt-key", *args, **kwargs)

    def salt_cloud(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """``salt-cloud -c <config_dir> ARGS``."""
        return self.command("salt-cloud", *args, **kwargs)

    def run_json(self, *args: str, **kwargs: Any) -> Any:
        """``salt-run --out=json ARGS``, parsed; raises DaemonError on a non-zero exit."""
        kwargs.setdefault("check", True)
        result = self.run("--out=json", *args, **kwargs)
        return json.loads(result.stdout)

    def salt_json(self, *args: str, **kwargs: Any) -> Any:
        """``salt --out=json --static ARGS``, parsed ({minion_id: return})."""
        result = self.salt("--out=json", "--static", *args, **kwargs)
        if not result.stdout.strip():
            raise DaemonError(f"salt {' '.join(args)} printed nothing\n{result.stderr}")
        return json.loads(result.stdout)

    @property
    def keys(self) -> keys.MasterKeys:
        """This master's minion keys and cached minion data, through Salt's APIs."""
        return keys.MasterKeys.at(self.pki_dir, self.cache_dir, self.sock_dir)

    def preseed_minion(self, minion_id: str) -> keys.KeyPair:
        """Generate ``minion_id``'s key pair and accept its public half on this master."""
        return self.keys.preseed(minion_id)

    def add_cloud(self, provider: str, provider_config: dict[str, Any] | None = None) -> Path:
        """Give this master's salt-cloud gdl's ``provider`` and the repository's profiles of it.

        The provider's file is ``provider_config`` written as YAML, else the
        repository's example (``cloud.providers.d/<provider>.conf.example``).
        Returns the profiles directory, where a test may add profiles of its own.
        """
        providers = self.config_dir / "cloud.providers.d"
        profiles = self.config_dir / "cloud.profiles.d"
        providers.mkdir(parents=True, exist_ok=True)
        profiles.mkdir(parents=True, exist_ok=True)
        if provider_config is None:
            shutil.copy(
                REPO_ROOT / "cloud.providers.d" / f"{provider}.conf.example",
                providers / f"{provider}.conf",
            )
        else:
            (providers / f"{provider}.conf").write_text(yaml.safe_dump(provider_config))
        shutil.copy(
            REPO_ROOT / "cloud.profiles.d" / f"{provider}.conf", profiles / f"{provider}.conf"
        )
        return profiles


class SaltMinion(SaltDaemon):
    """A salt-minion on this machine, talking to ``master`` with a preseeded key."""

    script = "salt-minion"
    role = "minion"
    # salt-minion sleeps 5 s after SIGTERM to flush returns; a test minion has
    # nothing left to return when it is stopped.
    stop_grace = 1.0

    def __init__(
        self,
        root: Path,
        master: SaltMaster,
        minion_id: str,
        *,
        extra_config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(root)
        self.master = master
        self.minion_id = minion_id
        self.extra_config = dict(extra_config or {})
        pair = master.preseed_minion(minion_id)
        self.pki_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        private = self.pki_dir / "minion.pem"
        private.write_text(pair.private_pem)
        private.chmod(0o400)
        (self.pki_dir / "minion.pub").write_text(pair.public_pem)
        _write_yaml(self.conf_file, self.config())

    def config(self) -> dict[str, Any]:
        config = self.common_config()
        config.update(
            {
                "id": self.minion_id,
                "master": self.master.interface,
                "master_port": self.master.ret_port,
                "publish_port": self.master.publish_port,
                "acceptance_wait_time": 1,
                "acceptance_wait_time_max": 1,
                "random_reauth_delay": 0,
                "auth_timeout": 10,
                "enable_fqdns_grains": False,
                "grains_refresh_every": 0,
                "startup_states": "",
                "file_client": "remote",
            }
        )
        config.update(self.extra_config)
        return config

    def start(self, timeout: float = 60.0) -> None:
        """Start the minion; return once it answers ``test.ping`` through the master."""
        self._spawn()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                break
            result = self.master.salt(
                "--out=json", "--static", "-t", "5", self.minion_id, "test.ping", timeout=30
            )
            with contextlib.suppress(ValueError):
                if json.loads(result.stdout or "{}").get(self.minion_id) is True:
                    return
            time.sleep(0.2)
        died = self._died_message()
        self.stop()
        raise DaemonError(f"salt-minion {self.minion_id} in {self.root} did not answer{died}")
