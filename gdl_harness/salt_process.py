"""Salt daemons as child processes: started in a session of their own, stopped by PID.

The process side of :mod:`gdl_harness.salt_daemons`: where a daemon's files go
under its root, how it is spawned, and how it and whatever it forked are
stopped.  ``stop_all()`` stops whatever is still running: the tests' conftest
calls it at the end of the session and it is also registered with ``atexit``.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path
from typing import Any

# The Salt scripts installed beside the interpreter running the tests (any venv).
SALT_BIN_DIR = Path(sys.executable).parent

# Unix socket paths must fit in sun_path (108 bytes); Salt's longest name under
# sock_dir is about 40 bytes, so longer sock dirs move to a short temporary one.
MAX_SOCK_DIR_LEN = 60

_running: dict[int, SaltDaemon] = {}


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


class ClientTimeout(subprocess.TimeoutExpired):
    """A client command ran past its time; its message ends with where its threads stood."""

    def __str__(self) -> str:
        tail = "\n".join((self.output or "").splitlines()[-20:])
        return (
            f"{super().__str__()}\nits last output:\n{tail}\n"
            f"its threads when it was stopped:\n{self.stderr or ''}"
        )


def run_client(
    cmd: list[str], timeout: float, env: dict[str, str] | None = None, cwd: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a Python client command (salt-run, gdl) to its end, at most ``timeout`` seconds.

    A command still running then is stopped with SIGABRT, on which Python's fault
    handler prints every thread's stack: the ClientTimeout raised says where it hung.
    """
    environment = {**os.environ, **(env or {}), "PYTHONFAULTHANDLER": "1"}
    with subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
        cwd=cwd,
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGABRT)
            try:
                stdout, stderr = process.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                stdout, stderr = process.communicate()
            raise ClientTimeout(cmd, timeout, stdout, stderr) from None
    return subprocess.CompletedProcess(cmd, process.returncode, stdout, stderr)


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


class SaltDaemon:
    """A Salt daemon run in the foreground in a new session, stopped by PID."""

    script = ""
    role = ""
    # Seconds a daemon gets to exit after SIGTERM before it is killed.
    stop_grace = 20.0

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.process: subprocess.Popen[bytes] | None = None
        self._short_sock_dir: str | None = None
        self._sock_dir_cleanup: weakref.finalize | None = None

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
            # Asking for the configuration makes the directory too: it goes with this
            # object unless a daemon is started on it (then stop() removes it, and a
            # daemon left running on purpose keeps it).
            self._sock_dir_cleanup = weakref.finalize(
                self, shutil.rmtree, self._short_sock_dir, ignore_errors=True
            )
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
        if self._sock_dir_cleanup is not None:
            self._sock_dir_cleanup.detach()
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
            self._remove_short_sock_dir()
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
        self._remove_short_sock_dir()

    def _remove_short_sock_dir(self) -> None:
        if self._short_sock_dir:
            shutil.rmtree(self._short_sock_dir, ignore_errors=True)
            self._short_sock_dir = None
        if self._sock_dir_cleanup is not None:
            self._sock_dir_cleanup.detach()
            self._sock_dir_cleanup = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self, timeout: float = 60.0) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


def running_daemons() -> list[SaltDaemon]:
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
