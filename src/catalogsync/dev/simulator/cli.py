"""``catalogsync simulator``: serve a simulated MediPim AU API until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import time

from catalogsync.common.logs import setup_logging
from catalogsync.dev.simulator.catalog import PROFILES, Catalog
from catalogsync.dev.simulator.server import STREAM_CONTENT_TYPE, SimulatorServer
from catalogsync.dev.simulator.versions import Mutation

REALISTIC_THROUGHPUT = 0.8
"""MB/s: 600 MB in 10-15 minutes, as seen from the real AU API."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="catalogsync simulator",
        description="Serve a deterministic, AU-shaped MediPim v4 API on loopback. Catalogs are "
        "rendered once into $CATALOGSYNC_CACHE/simulator (default ~/.cache/catalogsync/simulator).",
        epilog="Profiles: "
        + "; ".join(
            f"{p.name}: {p.products:,} products, ~{p.line_bytes:,} B/line ({p.about})"
            for p in PROFILES.values()
        ),
    )
    size = p.add_argument_group("catalog")
    size.add_argument("--profile", choices=sorted(PROFILES), default="small")
    size.add_argument(
        "--products", type=int, help="product count (all statuses); overrides profile"
    )
    size.add_argument("--line-bytes", type=int, help="mean stream line size; overrides profile")
    size.add_argument("--seed", type=int, default=1)
    size.add_argument("--version", type=int, default=1, help="catalog version to serve first")
    size.add_argument(
        "--changed",
        type=float,
        default=Mutation.changed,
        help="share of products changed per version (default %(default)s)",
    )
    size.add_argument("--added", type=float, default=Mutation.added)
    size.add_argument("--removed", type=float, default=Mutation.removed)
    size.add_argument("--replaced", type=float, default=Mutation.replaced)
    size.add_argument(
        "--status-changed",
        type=float,
        default=Mutation.status_changed,
        help="share switched between active and inactive per version (default %(default)s)",
    )
    size.add_argument(
        "--build-only",
        action="store_true",
        help="render the catalog into the cache, print its path and exit",
    )
    net = p.add_argument_group("server")
    net.add_argument("--host", default="127.0.0.1")
    net.add_argument("--port", type=int, default=8089)
    net.add_argument("--key-id", default="42")
    net.add_argument("--key-secret", default="simulator-secret-0123456789abcdef")
    net.add_argument(
        "--throughput",
        type=float,
        metavar="MB_PER_S",
        help="limit each stream to this many MB/s (default: unthrottled)",
    )
    net.add_argument(
        "--realistic",
        action="store_true",
        help=f"same as --throughput {REALISTIC_THROUGHPUT} (the real API's pace)",
    )
    net.add_argument("--ttfb", type=float, default=0.0, help="seconds before the first byte")
    net.add_argument("--content-type", default=STREAM_CONTENT_TYPE)
    net.add_argument(
        "--rate-limit", type=int, default=100, help="requests per minute per key; 0 = off"
    )
    net.add_argument("--retry-after", action="store_true", help="send Retry-After with 429")
    net.add_argument("--gzip", action="store_true", help="compress when the client accepts gzip")
    return p  # fmt: skip


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    setup_logging("text")
    profile = PROFILES[args.profile]
    mutation = Mutation(args.changed, args.added, args.removed, args.replaced, args.status_changed)
    catalog = Catalog(
        seed=args.seed,
        products=args.products or profile.products,
        line_bytes=args.line_bytes or profile.line_bytes,
        version=args.version,
        mutation=mutation,
    )
    log = logging.getLogger("catalogsync.simulator")
    if args.build_only:
        started = time.monotonic()
        path = catalog.build()
        log.info("%r is at %s (%.1fs)", catalog, path, time.monotonic() - started)
        print(path)
        return 0
    throughput = REALISTIC_THROUGHPUT if args.realistic else args.throughput
    server = SimulatorServer(
        catalog,
        host=args.host,
        port=args.port,
        key_id=args.key_id,
        key_secret=args.key_secret,
        content_type=args.content_type,
        throughput=throughput * 1e6 if throughput else None,
        ttfb=args.ttfb,
        rate_limit=args.rate_limit or None,
        retry_after=args.retry_after,
        gzip=args.gzip,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(server))
    return 0


async def _serve(server: SimulatorServer) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        for name, value in server.env().items():
            print(f"{name}={value}", flush=True)
        print(
            f"# admin: {server.url}/__sim__/stats, /__sim__/faults, /__sim__/version, "
            "/__sim__/advance",
            flush=True,
        )
        await stop.wait()
