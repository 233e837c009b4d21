"""Configuration errors are permanent, named, and never echo a secret.

Every failure path runs the real command in a subprocess with recognisable secret values in its
environment, and every output it leaves (stderr, the termination message) is searched for any
piece of them. Unreachable services are closed loopback ports.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import orjson
import pytest
import pytest_asyncio

from catalogsync.common import redact
from catalogsync.common.config import DatabaseSettings, load
from catalogsync.common.errors import ExitCode, PermanentError
from catalogsync.dev.postgres import LocalPostgres
from tests import maintainer_data as data

PASSWORD = "S3cr#tPass"
ENCODED = quote(PASSWORD, safe="")
MEDIPIM_SECRET = "MpSecret-7f3a9e"
SERVICE_KEY = "SrKey-c0ffee42beef"
SECRET_PIECES = (PASSWORD, ENCODED, "S3cr", "tPass", MEDIPIM_SECRET, SERVICE_KEY)
CLOSED = "127.0.0.1:1"
"""A loopback port nothing listens on: connections are refused at once."""

PREFIXES = ("MEDIPIM_", "STORAGE_", "FETCHER_", "SYNC_", "CATALOGSYNC_", "DATABASE_", "MAINTAINER_")


@dataclass(frozen=True)
class Outcome:
    code: int
    message: dict[str, Any]
    stderr: str
    raw_message: str

    def assert_clean(self) -> None:
        """No secret piece and no traceback in anything the process left behind."""
        for output in (self.stderr, self.raw_message):
            for piece in SECRET_PIECES:
                assert piece not in output, f"{piece!r} leaked: {output}"
        assert "Traceback" not in self.stderr, self.stderr


def environment(tmp_path: Path, **env: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith((*PREFIXES, "PG"))}
    return base | {
        "SYNC_RUN_ID": "conf-1",
        "CATALOGSYNC_TERMINATION_MESSAGE_PATH": str(tmp_path / "termination-log"),
        "CATALOGSYNC_LOG_FORMAT": "json",
        "MEDIPIM_API_KEY_ID": "4242",
        "MEDIPIM_API_KEY_SECRET": MEDIPIM_SECRET,
        "STORAGE_SERVICE_ROLE_KEY": SERVICE_KEY,
        "FETCHER_SCRATCH_DIR": str(tmp_path),
        "FETCHER_MAX_ATTEMPTS": "2",
        "FETCHER_BACKOFF_INITIAL": "0.05",
        "FETCHER_BACKOFF_MAX": "0.1",
        **env,
    }


async def command(args: list[str], env: Mapping[str, str]) -> Outcome:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "catalogsync",
        *args,
        env=dict(env),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    raw = read_message(Path(env["CATALOGSYNC_TERMINATION_MESSAGE_PATH"]))
    message = orjson.loads(raw) if raw else {}
    return Outcome(process.returncode, message, stderr.decode(errors="replace"), raw)


def read_message(path: Path) -> str:
    return path.read_text() if path.exists() else ""


async def maintain(tmp_path: Path, database_url: str, **env: str) -> Outcome:
    catalog = data.write(tmp_path / "c.ndjson", [data.product(n) for n in range(20)])
    settings = environment(tmp_path, DATABASE_URL=database_url, **env)
    return await command(["maintain", "--file", str(catalog)], settings)


def assert_permanent(outcome: Outcome, *words: str) -> None:
    assert outcome.code == ExitCode.PERMANENT, outcome.stderr
    assert outcome.message["ok"] is False, outcome.raw_message
    assert outcome.message["exitCode"] == ExitCode.PERMANENT
    for word in words:
        assert word in outcome.message["message"], outcome.message
        assert word in outcome.stderr
    outcome.assert_clean()


UNPARSEABLE = {
    "hash-in-password": f"postgresql://postgres:{PASSWORD}@{CLOSED}/postgres",
    "not-a-url": "not-a-url",
    "port-abc": f"postgresql://postgres:{ENCODED}@127.0.0.1:abc/postgres",
    "mysql": f"mysql://root:{ENCODED}@{CLOSED}/shop",
    "sslmode-bogus": f"postgresql://postgres:{ENCODED}@{CLOSED}/postgres?sslmode=bogus",
}


@pytest.mark.parametrize("url", UNPARSEABLE.values(), ids=UNPARSEABLE.keys())
def test_a_database_url_that_does_not_parse_names_the_variable(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", url)
    with pytest.raises(PermanentError) as caught:
        load(DatabaseSettings)
    text = str(caught.value)
    assert "DATABASE_URL" in text
    assert not any(piece in text for piece in SECRET_PIECES), text


@pytest.mark.parametrize("url", UNPARSEABLE.values(), ids=UNPARSEABLE.keys())
async def test_maintain_refuses_an_unparseable_url_at_once(tmp_path: Path, url: str) -> None:
    outcome = await maintain(tmp_path, url)
    assert_permanent(outcome, "DATABASE_URL")
    assert outcome.message["reason"] == "InvalidConfiguration"
    if "sslmode" not in url and "mysql" not in url:
        assert "percent-encode" in outcome.message["message"]


async def test_an_empty_database_url_does_not_fall_back_to_the_pg_environment(
    tmp_path: Path, pg: LocalPostgres
) -> None:
    # Without the check the driver would read these and happily connect to the test server.
    fallback = {"PGHOST": "127.0.0.1", "PGPORT": str(pg.port), "PGUSER": "postgres"}
    outcome = await maintain(tmp_path, "", PGPASSWORD=PASSWORD, **fallback)
    assert_permanent(outcome, "DATABASE_URL", "empty")


@pytest_asyncio.fixture
async def weak_role(pg: LocalPostgres, pg_dsn: str) -> str:
    """A login role with the recognisable password and no CREATE on schema public."""
    role = f"weak_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(pg.dsn)
    try:
        await admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{PASSWORD}'")
    finally:
        await admin.close()
    return pg_dsn.replace("postgres@", f"{role}:{ENCODED}@", 1)


async def test_tls_required_against_a_server_without_tls(tmp_path: Path, weak_role: str) -> None:
    outcome = await maintain(tmp_path, f"{weak_role}?sslmode=require")
    assert_permanent(outcome, "DATABASE_URL", "TLS", "sslmode")
    assert outcome.message["reason"] == "DatabaseTLSUnavailable"


async def test_an_unknown_url_parameter_is_named(tmp_path: Path, weak_role: str) -> None:
    outcome = await maintain(tmp_path, f"{weak_role}?connect_timeout=5")
    assert_permanent(outcome, "DATABASE_URL", "connect_timeout")


async def test_a_missing_privilege_is_named(tmp_path: Path, weak_role: str) -> None:
    outcome = await maintain(tmp_path, weak_role)
    assert_permanent(outcome, "permission denied for schema public", "GRANT")
    assert outcome.message["reason"] == "InsufficientPrivilege"


async def test_a_refused_database_connection_names_the_database(tmp_path: Path) -> None:
    outcome = await maintain(tmp_path, f"postgresql://postgres:{ENCODED}@{CLOSED}/postgres")
    assert outcome.code == ExitCode.TRANSIENT, outcome.stderr
    assert outcome.message["reason"] == "DatabaseUnavailable"
    for word in ("database", "DATABASE_URL", CLOSED):
        assert word in outcome.message["message"], outcome.message
    outcome.assert_clean()


async def test_unreachable_storage_is_storage_unavailable(tmp_path: Path) -> None:
    env = environment(
        tmp_path, MEDIPIM_URL=f"http://{CLOSED}", STORAGE_URL=f"http://{CLOSED}/storage/v1"
    )
    outcome = await command(["fetch"], env)
    assert outcome.code == ExitCode.TRANSIENT, outcome.stderr
    assert outcome.message["reason"] == "StorageUnavailable", outcome.message
    for word in ("Storage", "STORAGE_URL", CLOSED):
        assert word in outcome.message["message"], outcome.message
    outcome.assert_clean()


async def test_maintain_reading_unreachable_storage_is_storage_unavailable(tmp_path: Path) -> None:
    env = environment(
        tmp_path,
        DATABASE_URL=f"postgresql://postgres:{ENCODED}@{CLOSED}/postgres",
        STORAGE_URL=f"http://{CLOSED}/storage/v1",
    )
    outcome = await command(["maintain"], env)
    assert outcome.message["reason"] == "StorageUnavailable", outcome.message
    outcome.assert_clean()


@pytest.mark.parametrize(
    ("variable", "value"),
    [("MEDIPIM_URL", "notaurl"), ("STORAGE_URL", "notaurl"), ("STORAGE_URL", "ftp://x/y")],
)
async def test_urls_are_validated_when_the_fetch_starts(
    tmp_path: Path, variable: str, value: str
) -> None:
    env = environment(tmp_path, MEDIPIM_URL=f"http://{CLOSED}", STORAGE_URL=f"http://{CLOSED}")
    started = time.monotonic()
    outcome = await command(["fetch"], env | {variable: value})
    assert time.monotonic() - started < 30  # no retries with back-off
    assert_permanent(outcome, variable)
    assert outcome.message["reason"] == "InvalidConfiguration"


def test_redaction_masks_registered_values_and_any_url_password() -> None:
    redact.register("Tok-123456789")
    text = redact.text(
        "failed: Tok-123456789 and postgresql://u:p@ss#w0rd@db:5432/x and http://a:b@c/"
    )
    assert "Tok-123456789" not in text
    assert "p@ss#w0rd" not in text
    assert "postgresql://u:***@db:5432/x" in text
    assert "http://a:***@c/" in text
    redact.register(f"postgresql://u:{PASSWORD}@h/db")
    # a parser that cut the password at '#' must not leak either half
    assert redact.text("invalid literal for int(): 'S3cr' ... tPass@h") == (
        "invalid literal for int(): '***' ... ***@h"
    )
    assert redact.value({"message": [f"x {ENCODED} y"], "n": 3}) == {
        "message": ["x *** y"],
        "n": 3,
    }
