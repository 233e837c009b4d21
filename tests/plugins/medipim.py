"""MediPim for tests: the simulator (catalogsync.dev.simulator) on a free loopback port.

``medipim`` is a fresh server per test over a small catalog (2,000 products, ~2 KB lines, seed 1,
version 1): counters, rate limits and faults never leak between tests. ``medipim_factory`` starts
servers with other catalogs or options. Catalogs are rendered once per session into a temporary
cache, so tests never read a cache left by another version of the generator.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from catalogsync.dev.simulator import Catalog, SimulatorServer

MedipimFactory = Callable[..., Awaitable[SimulatorServer]]

DEFAULT_PRODUCTS = 2_000
DEFAULT_LINE_BYTES = 2_000


@pytest.fixture(scope="session")
def medipim_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("medipim-cache")


@pytest.fixture
def medipim_catalog(medipim_cache: Path) -> Catalog:
    """The default catalog, version 1 (``.at(2)`` for the next version)."""
    return Catalog(
        seed=1, products=DEFAULT_PRODUCTS, line_bytes=DEFAULT_LINE_BYTES, cache_dir=medipim_cache
    )


@pytest_asyncio.fixture(loop_scope="session")
async def medipim_factory(medipim_cache: Path) -> AsyncIterator[MedipimFactory]:
    """``await medipim_factory(products=500, line_bytes=5_600, throughput=1e6, ...)``.

    Catalog keywords (``seed``, ``products``, ``line_bytes``, ``version``, ``mutation``) or a ready
    ``catalog=``; every other keyword goes to ``SimulatorServer``. Servers stop after the test.
    """
    async with contextlib.AsyncExitStack() as servers:

        async def make(catalog: Catalog | None = None, **options: Any) -> SimulatorServer:
            if catalog is None:
                params = {
                    key: options.pop(key)
                    for key in ("seed", "products", "line_bytes", "version", "mutation")
                    if key in options
                }
                params.setdefault("products", DEFAULT_PRODUCTS)
                params.setdefault("line_bytes", DEFAULT_LINE_BYTES)
                catalog = Catalog(**params, cache_dir=medipim_cache)
            return await servers.enter_async_context(SimulatorServer(catalog, **options))

        yield make


@pytest_asyncio.fixture(loop_scope="session")
async def medipim(medipim_factory: MedipimFactory, medipim_catalog: Catalog) -> SimulatorServer:
    """A started simulator over ``medipim_catalog``: ``.url``, ``.auth``, ``.env()``, ``.faults``
    and the rest of ``SimulatorServer``."""
    return await medipim_factory(medipim_catalog)
