"""A local Supabase Storage API, for tests, the demo and trying the fetcher without a project.

The server itself is Node (``server.js`` here) because the TUS side must be the real thing:
tus-node-server, the library Supabase Storage runs. This module installs its npm dependencies
once into a cache outside the source tree, starts and stops it, and is the ``catalogsync
storage-server`` command. What it does differently from hosted Supabase is listed in
docs/testing.md ("Storage test server").
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx

from catalogsync.dev.cache import cache_root
from catalogsync.dev.service import AsyncService

PACKAGE_DIR = Path(__file__).resolve().parent
SERVER_SCRIPT = PACKAGE_DIR / "server.js"
CHUNK_SIZE = 6 * 1024 * 1024
"""The chunk size hosted Supabase requires for every PATCH but the last."""
DEFAULT_UPLOAD_EXPIRY = 3600.0
"""Seconds an upload URL lives: hosted Supabase's ``TUS_URL_EXPIRY_MS``."""
DEFAULT_FILE_SIZE_LIMIT = 50 * 1024**3
DEFAULT_CLI_PORT = 54321
MIN_NODE = (20, 19)
START_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0


class StorageServerError(RuntimeError):
    """The storage server could not be installed, started or reached."""


def _lock_digest() -> str:
    digest = hashlib.sha256()
    for name in ("package.json", "package-lock.json"):
        digest.update((PACKAGE_DIR / name).read_bytes())
    return digest.hexdigest()[:16]


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def node_executable() -> str:
    """The ``node`` to run, checked against the version tus-node-server needs."""
    node = shutil.which("node")
    if node is None:
        raise StorageServerError("node is not on PATH: install Node.js 20.19 or newer")
    found = subprocess.run([node, "--version"], capture_output=True, text=True, check=False)
    match = re.match(r"v(\d+)\.(\d+)", found.stdout.strip())
    if match is None or (int(match[1]), int(match[2])) < MIN_NODE:
        raise StorageServerError(
            f"{node} is {found.stdout.strip() or 'unknown'}; the storage server needs Node.js "
            f"{MIN_NODE[0]}.{MIN_NODE[1]} or newer"
        )
    return node


def ensure_npm_deps() -> Path:
    """Install the server's npm packages (``npm ci``) unless already there; return the prefix.

    The prefix is keyed by the hash of package.json + package-lock.json, so every checkout with the
    same lock file shares one install and a lock change gets a fresh one. Safe to call from several
    processes at once.
    """
    digest = _lock_digest()
    prefix = cache_root() / "storage-server" / digest
    stamp = prefix / ".installed"
    if stamp.exists():
        return prefix
    prefix.mkdir(parents=True, exist_ok=True)
    with _file_lock(prefix / ".lock"):
        if stamp.exists():
            return prefix
        npm = shutil.which("npm")
        if npm is None:
            raise StorageServerError("npm is not on PATH: install Node.js 20.19 or newer with npm")
        for name in ("package.json", "package-lock.json"):
            shutil.copyfile(PACKAGE_DIR / name, prefix / name)
        command = [npm, "ci", "--omit=dev", "--ignore-scripts", "--no-audit", "--no-fund"]
        done = subprocess.run(command, cwd=prefix, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise StorageServerError(
                f"`npm ci` in {prefix} failed ({done.returncode}); is the npm registry reachable?"
                f"\n{done.stderr.strip()[-2000:]}"
            )
        stamp.write_text(digest)
    return prefix


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint_service_key(
    secret: str | None = None, *, lifetime: float = 10 * 365 * 86400, role: str = "service_role"
) -> str:
    """A JWT of ``role`` shaped like Supabase's keys (HS256), so clients that decode keys accept it.

    The server compares the whole token, it does not verify claims: see docs/testing.md.
    """
    now = int(time.time())
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = {"iss": "catalogsync-dev", "role": role, "iat": now}
    claims["exp"] = now + int(lifetime)
    payload = _b64url(json.dumps(claims).encode())
    key = (secret or secrets.token_hex(32)).encode()
    signature = hmac.new(key, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64url(signature)}"


@dataclass(frozen=True)
class ServerStats:
    """What GET /__test__/stats reports; counts add up across restarts until reset."""

    upload_bytes_received: int
    """Body bytes the TUS store accepted from POST/PATCH requests."""
    requests: Mapping[str, int]
    """TUS requests by "<METHOD> upload", including refused ones."""


class StorageServer(AsyncService):
    """One local storage server process; an async context manager that starts and stops it.

    ``port=0`` picks a free port on first start; :meth:`restart` reuses it and the same
    ``data_dir``, so an upload interrupted by :meth:`stop` or :meth:`kill` can be resumed.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        service_key: str | None = None,
        buckets: Sequence[str] = (),
        enforce_chunk_size: bool = False,
        upload_expiry: float | None = DEFAULT_UPLOAD_EXPIRY,
        file_size_limit: int = DEFAULT_FILE_SIZE_LIMIT,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.host = host
        self.port = port
        self.service_key = service_key or mint_service_key()
        self.anon_key = mint_service_key(role="anon")
        """A valid JWT of role ``anon``, answered as RLS answers Supabase's anon key."""
        self.buckets = tuple(buckets)
        self.enforce_chunk_size = enforce_chunk_size
        self.upload_expiry = upload_expiry
        self.file_size_limit = file_size_limit
        self._process: asyncio.subprocess.Process | None = None
        self._drain: asyncio.Task[None] | None = None

    # -- addresses ---------------------------------------------------------------------------

    @property
    def origin(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        """The Storage API base, ending in ``/storage/v1`` (what ``STORAGE_URL`` takes)."""
        return f"{self.origin}/storage/v1"

    @property
    def headers(self) -> dict[str, str]:
        """What a Supabase client sends on every request."""
        return {"Authorization": f"Bearer {self.service_key}", "apikey": self.service_key}

    @property
    def log_path(self) -> Path:
        return self.data_dir / "server.log"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    # -- lifecycle ---------------------------------------------------------------------------

    def command(self, node_prefix: Path) -> list[str]:
        expiry_ms = int((self.upload_expiry or 0) * 1000)
        command = [
            node_executable(),
            str(SERVER_SCRIPT),
            f"--host={self.host}",
            f"--port={self.port}",
            f"--data-dir={self.data_dir}",
            f"--upload-expiry-ms={expiry_ms}",
            f"--file-size-limit={self.file_size_limit}",
            f"--anon-key={self.anon_key}",
            f"--node-prefix={node_prefix}",
            f"--parent-pid={os.getpid()}",
        ]
        command += [f"--bucket={bucket}" for bucket in self.buckets]
        if self.enforce_chunk_size:
            command.append("--enforce-chunk-size")
        return command

    async def start(self) -> None:
        if self.running:
            raise StorageServerError(f"the storage server is already running (pid {self.pid})")
        prefix = await asyncio.to_thread(ensure_npm_deps)
        command = await asyncio.to_thread(self.command, prefix)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "STORAGE_SERVICE_ROLE_KEY": self.service_key}
        with self.log_path.open("ab") as log:
            self._process = await asyncio.create_subprocess_exec(
                *command, stdout=asyncio.subprocess.PIPE, stderr=log, env=env
            )
        assert self._process.stdout is not None
        try:
            line = await asyncio.wait_for(self._process.stdout.readline(), START_TIMEOUT)
            ready = json.loads(line) if line else None
        except (TimeoutError, ValueError):
            ready = None
        if not isinstance(ready, dict) or ready.get("event") != "listening":
            await self.kill()
            raise StorageServerError(
                f"the storage server did not start; its log ({self.log_path}) ends with:\n"
                f"{self._log_tail()}"
            )
        self.port = int(ready["port"])
        self._drain = asyncio.create_task(self._drain_stdout(self._process.stdout))

    async def stop(self) -> None:
        """Stop gracefully (SIGTERM), or kill after a few seconds."""
        await self._end(signal.SIGTERM)

    async def kill(self) -> None:
        """Kill at once (SIGKILL), as a crash would: nothing is flushed."""
        await self._end(signal.SIGKILL)

    async def restart(self) -> None:
        """Stop and start again on the same port with the same data directory."""
        await self.stop()
        await self.start()

    async def _end(self, how: signal.Signals) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.returncode is None:
            process.send_signal(how)
            try:
                await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
            except TimeoutError:
                process.kill()
                await process.wait()
        if self._drain is not None:
            await self._drain
            self._drain = None

    @staticmethod
    async def _drain_stdout(stream: asyncio.StreamReader) -> None:
        while await stream.read(65536):
            pass

    def _log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty)"

    # -- test hooks and admin calls ------------------------------------------------------------

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        """An httpx client for the API: base URL ``<url>/``, auth headers set."""
        return httpx.AsyncClient(base_url=f"{self.url}/", headers=self.headers, **kwargs)

    async def stats(self) -> ServerStats:
        async with httpx.AsyncClient() as http:
            response = await http.get(f"{self.origin}/__test__/stats")
        response.raise_for_status()
        data = response.json()
        return ServerStats(data["upload_bytes_received"], dict(data["requests"]))

    async def reset_stats(self) -> None:
        async with httpx.AsyncClient() as http:
            (await http.delete(f"{self.origin}/__test__/stats")).raise_for_status()

    async def create_bucket(self, name: str, **options: Any) -> None:
        """Create a bucket; fine if it exists already."""
        async with self.client() as http:
            response = await http.post("bucket", json={"name": name, **options})
        body = response.json()
        if response.status_code != 200 and body.get("code") != "BucketAlreadyExists":
            raise StorageServerError(f"could not create bucket {name!r}: {body}")


# -- the `catalogsync storage-server` command --------------------------------------------------


def parser() -> argparse.ArgumentParser:
    cli = argparse.ArgumentParser(
        prog="catalogsync storage-server",
        description="Serve a local Supabase Storage API (TUS uploads, objects, copy) until Ctrl-C.",
    )
    cli.add_argument("--host", default="127.0.0.1", help="address to listen on (%(default)s)")
    cli.add_argument(
        "--port", type=int, default=DEFAULT_CLI_PORT, help="port, 0 for any (%(default)s)"
    )
    cli.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where objects and uploads are kept (default: $CATALOGSYNC_CACHE/storage-data)",
    )
    cli.add_argument(
        "--service-key",
        default=os.environ.get("STORAGE_SERVICE_ROLE_KEY") or None,
        help="the one accepted Bearer token (default: $STORAGE_SERVICE_ROLE_KEY, else a new one)",
    )
    cli.add_argument(
        "--bucket",
        action="append",
        default=[],
        help="create this bucket at start if missing (repeatable)",
    )
    cli.add_argument(
        "--enforce-chunk-size",
        action="store_true",
        help=f"refuse PATCH bodies other than {CHUNK_SIZE} bytes except the last, as hosted does",
    )
    cli.add_argument(
        "--upload-expiry",
        type=float,
        default=DEFAULT_UPLOAD_EXPIRY,
        help="seconds an upload URL lives, 0 for never (%(default)s)",
    )
    cli.add_argument(
        "--file-size-limit",
        type=int,
        default=DEFAULT_FILE_SIZE_LIMIT,
        help="global object size limit in bytes (%(default)s)",
    )
    return cli


def _announce(line: bytes, server: StorageServer, out: IO[str]) -> None:
    ready = json.loads(line)
    print(f"Supabase Storage API at {ready['url']}", file=out)
    print(f"  STORAGE_URL={ready['url']}", file=out)
    print(f"  STORAGE_SERVICE_ROLE_KEY={server.service_key}", file=out)
    print(f"  data: {server.data_dir}   buckets: {', '.join(server.buckets) or '-'}", file=out)
    out.flush()


def main(argv: Sequence[str]) -> int:
    args = parser().parse_args(list(argv))
    server = StorageServer(
        args.data_dir or cache_root() / "storage-data",
        host=args.host,
        port=args.port,
        service_key=args.service_key,
        buckets=args.bucket,
        enforce_chunk_size=args.enforce_chunk_size,
        upload_expiry=args.upload_expiry,
        file_size_limit=args.file_size_limit,
    )
    try:
        command = server.command(ensure_npm_deps())
    except StorageServerError as error:
        print(f"catalogsync storage-server: {error}", file=sys.stderr)
        return 2
    server.data_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "STORAGE_SERVICE_ROLE_KEY": server.service_key}
    with subprocess.Popen(command, stdout=subprocess.PIPE, env=env) as process:
        assert process.stdout is not None
        previous = signal.signal(signal.SIGTERM, lambda *_: process.terminate())
        try:
            line = process.stdout.readline()
            if line:
                _announce(line, server, sys.stdout)
            return process.wait()
        except KeyboardInterrupt:
            process.terminate()
            return process.wait()
        finally:
            signal.signal(signal.SIGTERM, previous)
