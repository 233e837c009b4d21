"""PostgreSQL for tests: one throwaway server per session, one fresh database per test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
import pytest_asyncio

from catalogsync.dev.postgres import LocalPostgres


@pytest.fixture(scope="session")
def pg() -> Iterator[LocalPostgres]:
    """The session's server; ``pg.dsn`` reaches its ``postgres`` database as superuser."""
    with LocalPostgres() as server:
        yield server


@pytest_asyncio.fixture
async def pg_dsn(pg: LocalPostgres) -> AsyncIterator[str]:
    """A DSN to a database of this test's own, dropped (connections and all) afterwards."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(pg.dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield pg.dsn_for(name)
    admin = await asyncpg.connect(pg.dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
