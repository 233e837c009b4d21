"""Supabase Storage for tests: the local storage server (catalogsync.dev.storage_server).

``storage_server`` is one server for the session with the ``medipim-raw`` bucket; tests should
use their own object keys. A test that needs other options (chunk-size enforcement, a short upload
lifetime) or that stops and restarts the server gets a server of its own from
``make_storage_server``. Every server started here is stopped at tear-down.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from catalogsync.common.config import DEFAULT_BUCKET
from catalogsync.dev.storage_server import StorageServer

MakeStorageServer = Callable[..., Awaitable[StorageServer]]


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def storage_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[StorageServer]:
    """The session's server: ``.url`` ends in /storage/v1, ``.headers`` carry the service key."""
    server = StorageServer(tmp_path_factory.mktemp("storage"), buckets=[DEFAULT_BUCKET])
    async with server:
        yield server


@pytest_asyncio.fixture(loop_scope="session")
async def make_storage_server(tmp_path: Path) -> AsyncIterator[MakeStorageServer]:
    """``await make_storage_server(enforce_chunk_size=True, upload_expiry=1.0, ...)``: a started
    server of this test's own (StorageServer's keyword options; ``medipim-raw`` unless ``buckets``
    says otherwise), stopped after the test."""
    async with contextlib.AsyncExitStack() as servers:

        async def make(**options: Any) -> StorageServer:
            options.setdefault("buckets", [DEFAULT_BUCKET])
            directory = Path(tempfile.mkdtemp(prefix="storage-", dir=tmp_path))
            return await servers.enter_async_context(StorageServer(directory, **options))

        yield make
