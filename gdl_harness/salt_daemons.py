"""Real salt-master and salt-minion daemons, each in its own temporary root.

Every daemon's configuration, keys, cache, sockets and logs live under the root it
is given; it listens only on the interface it is given (127.0.0.1 by default) and
on free ports, so several test runs share one machine without meeting.  Daemons
run in the foreground as children of the test process, each in its own session,
so they can be stopped by PID and reaped; anything a daemon forked that is still
alive at stop (its process group, or any process naming its config dir) is
killed too.  ``stop_all()`` stops whatever is still running: the tests' conftest
calls it at the end of the session and it is also registered with ``atexit``.

Usage::

    master = SaltMaster(tmp_path / "master")
    master.start()
    minion = SaltMinion(tmp_path / "minion", master, "app-1-blog-dev")
    minion.start()
    print(master.salt("app-1-blog-dev", "test.ping").stdout)
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from gdl import keys
from gdl.config import Settings

# The source tree gdl runs from (states/, pillar/, apps/, cloud configs): the masters serve it.
REPO_ROOT = Settings().source_dir

# The Salt scripts installed beside the interpreter running the tests (any venv).
SALT_BIN_DIR = Path(sys.executable).parent

# Unix socket paths must fit in sun_path (108 bytes); Salt's longest name under
# sock_dir is about 40 bytes, so longer sock dirs move to a short temporary one.
MAX_SOCK_DIR_LEN = 60

DEFAULT_COMMAND_TIMEOUT = 120.0

# The same leftovers bootstrap.sh keeps out of the master's file lists.
FILE_IGNORE_REGEX = (
    r"(^|/)\.(git|venv|tox|pytest_cache|ruff_cache)(/|$)",
    r"(^|/)(__pycache__|build|dist|[^/]*\.egg-info)(/|$)",
)

_running: dict[int, _Daemon] = {}


def file_roots(state_dir: Path) -> dict[str, list[str]]:
    """The master's file_roots as bootstrap.sh writes them: what minions fetch, no more.

    ``states/`` holds the roles, top.sls, the orchestration (``states/orch``)
    and gdl_lb (``states/_modules``); ``<state_dir>/files`` the release archives.
    """
    return {"base": [str(REPO_ROOT / "states"), str(state_dir / "files")]}


def pillar_roots(state_dir: Path) -> dict[str, list[str]]:
    """The master's pillar_roots as bootstrap.sh writes them."""
    return {"base": [str(REPO_ROOT / "pillar"), str(state_dir / "pillar")]}


class DaemonError(RuntimeError):
    """A daemon did not start or a command against it failed."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on at ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def salt_script(name: str) -> str:
    """Path of a Salt command (``salt-master``, ``salt-run``, ...) of this interpreter's venv."""
    path = SALT_BIN_DIR / name
    if not path.exists():
        raise DaemonError(f"{path} not found: install salt into {SALT_BIN_DIR.parent}")
    return str(path)


def _process_group(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def _pids_of(pgid: int | None, marker: str) -> set[int]:
    """Live PIDs in process group ``pgid`` or whose command line contains ``marker``."""
    found: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        if pid == os.getpid():
            continue
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        # Fields after the parenthesised command: state ppid pgrp ...
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] == "Z":
            continue
        if (pgid is not None and int(fields[2]) == pgid) or marker in cmdline:
            found.add(pid)
    return found


def _write_yaml(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, default_flow_style=False, sort_keys=True))


class _Daemon:
    """A Salt daemon run in the foreground in a new session, stopped by PID."""

    script = ""
    role = ""
    # Seconds a daemon gets to exit after SIGTERM before it is killed.
    stop_grace = 20.0

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.process: subprocess.Popen[bytes] | None = None
        self._short_sock_dir: str | None = None

    # Paths inside the root ------------------------------------------------------
    @property
    def config_dir(self) -> Path:
        return self.root / "etc" / "salt"

    @property
    def conf_file(self) -> Path:
        return self.config_dir / self.role

    @property
    def pki_dir(self) -> Path:
        return self.config_dir / "pki" / self.role

    @property
    def cache_dir(self) -> Path:
        return self.root / "var" / "cache" / "salt" / self.role

    @property
    def log_file(self) -> Path:
        return self.root / "var" / "log" / "salt" / self.role

    @property
    def pid_file(self) -> Path:
        return self.root / "var" / "run" / f"salt-{self.role}.pid"

    @property
    def output_file(self) -> Path:
        """The daemon's stdout and stderr (start-up errors land here, not in the log)."""
        return self.root / "var" / "log" / "salt" / f"{self.role}.out"

    @property
    def sock_dir(self) -> Path:
        preferred = self.root / "var" / "run" / "salt" / self.role
        if len(str(preferred)) <= MAX_SOCK_DIR_LEN:
            return preferred
        if self._short_sock_dir is None:
            self._short_sock_dir = tempfile.mkdtemp(prefix=f"gdl-{self.role}-")
        return Path(self._short_sock_dir)

    def common_config(self) -> dict[str, Any]:
        return {
            "root_dir": str(self.root),
            "user": "root",
            "pki_dir": str(self.pki_dir),
            "cachedir": str(self.cache_dir),
            "sock_dir": str(self.sock_dir),
            "pidfile": str(self.pid_file),
            "log_file": str(self.log_file),
            "key_logfile": str(self.log_file.with_name("key")),
            "log_level": "warning",
            "log_level_logfile": "info",
            "ipv6": False,
        }

    # Life cycle -----------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _spawn(self) -> None:
        if self.is_running():
            raise DaemonError(f"salt-{self.role} in {self.root} is already running")
        for directory in (self.log_file.parent, self.pid_file.parent, self.sock_dir):
            directory.mkdir(parents=True, exist_ok=True)
        with open(self.output_file, "ab") as output:
            self.process = subprocess.Popen(
                [salt_script(self.script), "-c", str(self.config_dir)],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=str(self.root),
                start_new_session=True,
            )
        _running[self.process.pid] = self

    def _died_message(self) -> str:
        tail = ""
        for path in (self.output_file, self.log_file):
            if path.exists():
                lines = path.read_text(errors="replace").strip().splitlines()[-15:]
                tail += f"\n--- {path} ---\n" + "\n".join(lines)
        return tail

    def stop(self, timeout: float | None = None) -> None:
        """SIGTERM the daemon, wait, then SIGKILL whatever of it is left; idempotent."""
        if timeout is None:
            timeout = self.stop_grace
        process = self.process
        if process is None:
            return
        pgid = process.pid  # its own session and process group (start_new_session)
        marker = f"-c {self.config_dir}"
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=timeout)
        # Children that outlived the parent (workers, jobs that made their own session).
        deadline = time.monotonic() + 10
        while True:
            leftovers = _pids_of(pgid, marker)
            if process.poll() is None:
                leftovers.add(process.pid)
            if not leftovers:
                break
            for pid in leftovers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=0.2)
            if time.monotonic() > deadline:
                raise DaemonError(f"could not stop salt-{self.role} processes {sorted(leftovers)}")
        _running.pop(process.pid, None)
        self.pid_file.unlink(missing_ok=True)
        if self._short_sock_dir:
            shutil.rmtree(self._short_sock_dir, ignore_errors=True)
            self._short_sock_dir = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self, timeout: float = 60.0) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class SaltMaster(_Daemon):
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
        result = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **(env or {})},
            cwd=str(self.root),
        )
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


class SaltMinion(_Daemon):
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


def running_daemons() -> list[_Daemon]:
    """Daemons started through this module and not stopped yet."""
    return list(_running.values())


def stop_all() -> list[str]:
    """Stop every daemon this module started; returns a line for each one it had to stop."""
    stopped = []
    for daemon in list(_running.values()):
        stopped.append(f"salt-{daemon.role} pid {daemon.pid} in {daemon.root}")
        with contextlib.suppress(Exception):
            daemon.stop()
    return stopped


atexit.register(stop_all)
