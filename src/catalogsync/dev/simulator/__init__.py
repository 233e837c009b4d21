"""A local, deterministic stand-in for MediPim's AU product API (v4).

Everything that fetches from MediPim in tests, benchmarks and the demo fetches from here::

    catalog = Catalog(seed=1, products=2_000, line_bytes=2_000)
    async with SimulatorServer(catalog) as medipim:
        ...  # POST f"{medipim.url}/v4/products/stream" with auth=medipim.auth
        medipim.faults.inject(Fault.cut(after_bytes=100_000))
        medipim.set_version(2)  # catalog.at(2).changes() says exactly what changed

``catalogsync simulator --help`` serves the same from the command line.

The server (aiohttp) and the command line load on first use, so code that only needs the catalog
(the benchmarks' generators, the fixtures' cache) does not pay for them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from catalogsync.dev.simulator.catalog import PROFILES, Catalog, Profile, Snapshot, cache_root
from catalogsync.dev.simulator.faults import Fault, Faults
from catalogsync.dev.simulator.versions import ChangeSet, Mutation, version_time

if TYPE_CHECKING:
    from catalogsync.dev.simulator.cli import main
    from catalogsync.dev.simulator.server import STREAM_CONTENT_TYPE, SimulatorServer

_LAZY = {"main": "cli", "SimulatorServer": "server", "STREAM_CONTENT_TYPE": "server"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = [
    "PROFILES",
    "STREAM_CONTENT_TYPE",
    "Catalog",
    "ChangeSet",
    "Fault",
    "Faults",
    "Mutation",
    "Profile",
    "SimulatorServer",
    "Snapshot",
    "cache_root",
    "main",
    "version_time",
]
