"""The simulated MediPim v4 HTTP API (aiohttp), with test controls.

``SimulatorServer`` is an async context manager: it renders (or reuses) the catalog cache, listens
on loopback, and exposes what tests need: ``url``, credentials, ``faults``, ``set_version()``,
request counters and the user agents seen. The same controls are reachable over HTTP under
``/__sim__/`` (no auth) for the demo and for processes that do not share memory with the server.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from catalogsync.dev.service import AsyncService
from catalogsync.dev.simulator.catalog import Catalog
from catalogsync.dev.simulator.faults import STREAM, Fault, Faults
from catalogsync.dev.simulator.filters import (
    CODE_FILTERS,
    InvalidRequest,
    ProductQuery,
    Violation,
    page_slice,
    parse_entity_query,
    parse_product_query,
)
from catalogsync.dev.simulator.generator import Universe
from catalogsync.dev.simulator.stream import Signer, error_body, signed_record, stream_blocks

log = logging.getLogger("catalogsync.simulator")

STREAM_CONTENT_TYPE = "application/x-json-stream"
EMBED_VALIDITY = 3 * 3600
"""Embed URLs are pre-signed for a few hours."""
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
FAULTS = web.RequestKey("faults", list[Fault])
"""The faults armed for this request, taken once by the middleware."""


class RateLimiter:
    """``limit`` requests per key in any rolling ``window`` seconds (a sliding log)."""

    def __init__(self, limit: int | None, window: float, clock: Callable[[], float]) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self._log: dict[str, collections.deque[float]] = collections.defaultdict(collections.deque)

    def admit(self, key: str) -> float | None:
        """None if admitted (and counted), else seconds until the oldest request leaves."""
        if self.limit is None:
            return None
        now = self.clock()
        entries = self._log[key]
        while entries and entries[0] <= now - self.window:
            entries.popleft()
        if len(entries) >= self.limit:
            return entries[0] + self.window - now
        entries.append(now)
        return None

    def reset(self) -> None:
        self._log.clear()


class SimulatorServer(AsyncService):
    """A running simulator; see the module docstring and ``docs/testing.md``."""

    def __init__(
        self,
        catalog: Catalog | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        key_id: str = "42",
        key_secret: str = "simulator-secret-0123456789abcdef",
        content_type: str = STREAM_CONTENT_TYPE,
        throughput: float | None = None,
        ttfb: float = 0.0,
        rate_limit: int | None = 100,
        rate_window: float = 60.0,
        retry_after: bool = False,
        gzip: bool = False,
        block_size: int = 1 << 20,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.catalog = catalog or Catalog()
        self.host = host
        self.port = port
        self.keys = {key_id: key_secret}
        self.key_id = key_id
        self.key_secret = key_secret
        self.content_type = content_type
        self.throughput = throughput
        """Bytes per second per stream; None streams as fast as the client reads."""
        self.ttfb = ttfb
        self.retry_after = retry_after
        self.gzip = gzip
        self.block_size = block_size
        self.rate = RateLimiter(rate_limit, rate_window, clock)
        self.faults = Faults()
        self.requests: collections.Counter[str] = collections.Counter()
        """Requests per endpoint (``products/stream``, ``brands/query``, ...), any outcome."""
        self.statuses: collections.Counter[tuple[str, int]] = collections.Counter()
        self.user_agents: list[str] = []
        self.bytes_sent = 0
        """Body bytes of every products stream written so far (what a client received)."""
        self._universe = Universe(self.catalog.seed, self.catalog.products)
        self._last_ts = 0
        self._runner: web.AppRunner | None = None
        self._retired: list[Catalog] = []

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self.catalog.snapshot)
        self._runner = web.AppRunner(self.app(), access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        log.info("MediPim simulator serving %r at %s", self.catalog, self.url)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for catalog in (*self._retired, self.catalog):
            catalog.close()
        self._retired.clear()

    @property
    def url(self) -> str:
        """Base URL standing in for ``https://api.au.medipim.com`` (append ``/v4/...``)."""
        return f"http://{self.host}:{self.port}"

    @property
    def auth(self) -> tuple[str, str]:
        return self.key_id, self.key_secret

    def env(self) -> dict[str, str]:
        """The fetcher's environment for this server."""
        return {
            "MEDIPIM_URL": self.url,
            "MEDIPIM_API_KEY_ID": self.key_id,
            "MEDIPIM_API_KEY_SECRET": self.key_secret,
        }

    # -- test controls ------------------------------------------------------------------------

    @property
    def version(self) -> int:
        return self.catalog.version

    def set_version(self, version: int) -> Catalog:
        """Serve another version from now on (renders it first if not cached: blocking)."""
        catalog = self.catalog.at(version)
        catalog.snapshot()
        self._retired.append(self.catalog)
        self.catalog = catalog
        log.info("MediPim simulator now serves version %d", version)
        return catalog

    def advance(self, at: int | None = None) -> Catalog:
        """Mutate the served catalog now: serve ``catalog.advance(at)`` (blocking while the new
        version renders), whose every change carries ``meta.updatedAt == at`` (default: now)."""
        catalog = self.catalog.advance(at)
        catalog.snapshot()
        self._retired.append(self.catalog)
        self.catalog = catalog
        log.info(
            "MediPim simulator now serves live version %d (changes at %d)",
            catalog.version,
            catalog.times[-1],
        )
        return catalog

    def add_key(self, key_id: str, key_secret: str) -> None:
        self.keys[key_id] = key_secret

    def reset(self) -> None:
        """Forget counters, rate-limit history and armed faults."""
        self.requests.clear()
        self.statuses.clear()
        self.user_agents.clear()
        self.bytes_sent = 0
        self.rate.reset()
        self.faults.clear()
        self.faults.fired.clear()

    # -- application --------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=16 << 20)
        app.router.add_post("/v4/products/stream", self._stream)
        app.router.add_post("/v4/products/query", self._query)
        app.router.add_get("/v4/products/find", self._find)
        for name in ENTITY_ENDPOINTS:
            app.router.add_post(f"/v4/{name}/query", self._entities)
        app.router.add_get("/__sim__/stats", self._admin_stats)
        app.router.add_post("/__sim__/faults", self._admin_faults)
        app.router.add_delete("/__sim__/faults", self._admin_clear_faults)
        app.router.add_post("/__sim__/version", self._admin_version)
        app.router.add_post("/__sim__/advance", self._admin_advance)
        app.router.add_get("/__sim__/changes", self._admin_changes)
        app.router.add_post("/__sim__/reset", self._admin_reset)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith("/v4/"):
            return await handler(request)
        endpoint = request.path.removeprefix("/v4/")
        agent = request.headers.get("User-Agent", "")
        self.requests[endpoint] += 1
        self.user_agents.append(agent)
        started = time.monotonic()
        response = await self._guarded(request, handler, endpoint)
        self.statuses[(endpoint, response.status)] += 1
        log.info(
            "%s %s -> %d in %.2fs (User-Agent: %s)",
            request.method,
            request.path,
            response.status,
            time.monotonic() - started,
            agent or "-",
        )
        return response

    async def _guarded(
        self, request: web.Request, handler: Handler, endpoint: str
    ) -> web.StreamResponse:
        key = self._authenticate(request.headers.get("Authorization", ""))
        if key is None:
            return _error(
                401,
                "authentication.not_authenticated",
                "Authentication failed: send HTTP Basic credentials (API key id and secret).",
            )
        wait = self.rate.admit(key)
        if wait is not None:
            headers = {"Retry-After": str(max(1, round(wait)))} if self.retry_after else None
            return _error(
                429, "too_many_requests", "Rate limit exceeded: 100 requests per minute.", headers
            )
        faults = self.faults.take(endpoint)
        request[FAULTS] = faults
        for fault in faults:
            if fault.kind == "status":
                return _error(fault.status, fault.error_code, "Simulated failure.")
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status == 404:
                return _error(404, "not_found", "No such endpoint.")
            if exc.status == 405:
                return _error(405, "method_not_allowed", f"{request.method} is not allowed here.")
            raise

    def _authenticate(self, header: str) -> str | None:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            key_id, _, secret = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return key_id if key_id in self.keys and self.keys[key_id] == secret else None

    def _signer(self) -> Signer:
        """A signer with a timestamp no earlier response used, so every response differs."""
        self._last_ts = max(int(time.time()) + EMBED_VALIDITY, self._last_ts + 1)
        return Signer(self.key_secret.encode(), self._last_ts)

    # -- products -----------------------------------------------------------------------------

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        query = await _product_query(request, paged=False)
        if isinstance(query, web.Response):
            return query
        snapshot = self.catalog.snapshot()
        positions = query.select(snapshot)
        if self.ttfb:
            await asyncio.sleep(self.ttfb)
        if not positions:
            return web.Response(status=204)
        faults = request[FAULTS]
        response = web.StreamResponse(status=200, headers={"Content-Type": self.content_type})
        response.enable_chunked_encoding()
        if self.gzip and "gzip" in request.headers.get("Accept-Encoding", ""):
            response.enable_compression(web.ContentCoding.gzip)
        await response.prepare(request)
        block_size = self.block_size if self.throughput is None else 64 << 10
        blocks = stream_blocks(
            snapshot, positions, self._signer(), block_size=block_size, faults=faults
        )
        try:
            if await self._send(request, response, blocks, faults):
                await response.write_eof()
        except ConnectionError:
            log.info("client went away after %s", response.body_length)
        return response

    async def _send(
        self,
        request: web.Request,
        response: web.StreamResponse,
        blocks: Any,
        faults: list[Fault],
    ) -> bool:
        """Write ``blocks`` with throttling, stalls and cuts; False if the connection was cut."""
        events = sorted(
            [(f.after_bytes, f.seconds) for f in faults if f.kind == "stall"]
            + [(f.after_bytes, -1.0) for f in faults if f.kind == "cut"]
        )
        throttle = _Throttle(self.throughput)
        sent = 0
        for block in blocks:
            position = 0
            while events and sent + len(block) - position >= events[0][0]:
                at, seconds = events.pop(0)
                piece = block[position : position + max(0, at - sent)]
                await throttle.write(response, piece)
                position += len(piece)
                sent += len(piece)
                self.bytes_sent += len(piece)
                if seconds < 0:
                    if request.transport is not None:
                        request.transport.close()  # flushes what was written, then FIN
                    log.info("fault: connection cut after %d bytes", sent)
                    return False
                log.info("fault: stalling %.1fs after %d bytes", seconds, sent)
                await asyncio.sleep(seconds)
            await throttle.write(response, block[position:] if position else block)
            sent += len(block) - position
            self.bytes_sent += len(block) - position
        return True

    async def _query(self, request: web.Request) -> web.StreamResponse:
        query = await _product_query(request, paged=True)
        if isinstance(query, web.Response):
            return query
        assert query.page is not None
        snapshot = self.catalog.snapshot()
        positions = query.select(snapshot)
        start, stop = page_slice(len(positions), query.page)
        sign = self._signer()
        number, size = query.page
        head = b'{"meta":{"total":%d,"page":{"no":%d,"offset":%d,"size":%d}},"results":[' % (
            len(positions),
            number,
            number * size,
            size,
        )
        records = b",".join(signed_record(snapshot, p, sign) for p in positions[start:stop])
        return _json_response(head + records + b"]}")

    async def _find(self, request: web.Request) -> web.StreamResponse:
        params = {k: v for k, v in request.query.items() if k in ("id", "ean", *CODE_FILTERS)}
        if len(params) != 1:
            return _invalid(
                InvalidRequest([Violation("", "pass exactly one of id, ean or a code field")])
            )
        ((key, value),) = params.items()
        snapshot = self.catalog.snapshot()
        found = snapshot.position(value) if key == "id" else None
        if key != "id":
            wanted = value.lstrip("0")
            for position, facts in enumerate(snapshot.facts):
                codes = facts["ean"] if key == "ean" else [facts["codes"].get(key) or ""]
                if any(c.lstrip("0") == wanted for c in codes):
                    found = position
                    break
        if found is None:
            return _error(404, "not_found", f"No product with {key} {value}.")
        record = signed_record(snapshot, found, self._signer())
        return _json_response(b'{"product":' + record + b"}")

    # -- brands, organizations, ... ------------------------------------------------------------

    async def _entities(self, request: web.Request) -> web.StreamResponse:
        name = request.path.removeprefix("/v4/").removesuffix("/query")
        fields, sortings = ENTITY_ENDPOINTS[name]
        body = await _json_body(request, empty_ok=True)
        if isinstance(body, web.Response):
            return body
        try:
            run, page = parse_entity_query(body, fields, sortings)
        except InvalidRequest as exc:
            return _invalid(exc)
        results = run(self._entity_list(name))
        meta: dict[str, Any] = {"total": len(results)}
        if page is not None:
            start, stop = page_slice(len(results), page)
            meta["page"] = {"no": page[0], "offset": page[0] * page[1], "size": page[1]}
            results = results[start:stop]
        return _json_response(orjson.dumps({"meta": meta, "results": results}))

    def _entity_list(self, name: str) -> list[dict[str, Any]]:
        u = self._universe
        if name == "brands":
            return [b | {"name": _plain(b["name"])} for b in u.brands]
        if name == "organizations":
            brand_ids = [b["id"] for b in u.brands]
            out = []
            for n, org in enumerate(u.organizations):
                entry = org | {"name": _plain(org["name"])}
                entry["brands"] = brand_ids[n :: len(u.organizations)]
                entry["productFamilies"] = []
                contact = org.get("contactInformation")
                if contact is not None:
                    region = contact["region"]
                    entry["contactInformation"] = contact | {
                        "region": None if region is None else {"value": region, "label": region}
                    }
                out.append(entry)
            return out
        if name == "public-categories":
            return u.categories
        if name == "product-families":
            return u.families
        return u.ingredients

    # -- admin --------------------------------------------------------------------------------

    async def _admin_stats(self, request: web.Request) -> web.StreamResponse:
        return _json_response(
            orjson.dumps(
                {
                    "version": self.version,
                    "catalog": repr(self.catalog),
                    "bytesSent": self.bytes_sent,
                    "requests": dict(self.requests),
                    "statuses": [[e, s, n] for (e, s), n in self.statuses.items()],
                    "userAgents": sorted(set(self.user_agents)),
                    "faults": {
                        "pending": [
                            f.to_json() | {"endpoint": e, "times": t}
                            for f, e, t in self.faults.pending
                        ],
                        "fired": [f.to_json() | {"endpoint": e} for e, f in self.faults.fired],
                    },
                }
            )
        )

    async def _admin_faults(self, request: web.Request) -> web.StreamResponse:
        body = await _json_body(request)
        if isinstance(body, web.Response):
            return body
        try:
            specs = body.get("faults", [body]) if isinstance(body, dict) else body
            faults = [Fault.from_json(spec) for spec in specs]
            times = body.get("times", 1) if isinstance(body, dict) else 1
            endpoint = body.get("endpoint", STREAM) if isinstance(body, dict) else STREAM
            self.faults.inject(*faults, times=times, endpoint=endpoint)
        except (ValueError, TypeError, AttributeError) as exc:
            return _error(422, "validation_failed", f"Bad fault: {exc}.")
        return await self._admin_stats(request)

    async def _admin_clear_faults(self, request: web.Request) -> web.StreamResponse:
        self.faults.clear()
        return web.Response(status=204)

    async def _admin_version(self, request: web.Request) -> web.StreamResponse:
        body = await _json_body(request)
        if isinstance(body, web.Response):
            return body
        version = body.get("version") if isinstance(body, dict) else None
        if not isinstance(version, int) or version < 1:
            return _error(422, "validation_failed", 'Send {"version": <int >= 1>}.')
        catalog = await asyncio.to_thread(self.set_version, version)
        return await self._changes_response(catalog)

    async def _admin_advance(self, request: web.Request) -> web.StreamResponse:
        body = await _json_body(request, empty_ok=True)
        if isinstance(body, web.Response):
            return body
        at = body.get("at") if isinstance(body, dict) else None
        if at is not None and (not isinstance(at, int) or isinstance(at, bool)):
            return _error(422, "validation_failed", 'Send {} or {"at": <unix seconds>}.')
        try:
            catalog = await asyncio.to_thread(self.advance, at)
        except ValueError as exc:
            return _error(422, "validation_failed", str(exc))
        return await self._changes_response(catalog)

    async def _admin_changes(self, request: web.Request) -> web.StreamResponse:
        raw = request.query.get("version", str(self.version))
        if not raw.isdigit() or int(raw) < 1:
            return _error(422, "validation_failed", "version must be an integer >= 1.")
        return await self._changes_response(self.catalog.at(int(raw)))

    @staticmethod
    async def _changes_response(catalog: Catalog) -> web.StreamResponse:
        changes = catalog.changes()
        return _json_response(
            orjson.dumps(
                {
                    "version": catalog.version,
                    "since": changes.since,
                    "changed": sorted(changes.changed),
                    "added": sorted(changes.added),
                    "removed": sorted(changes.removed),
                    "replaced": sorted(changes.replaced),
                    "replacements": dict(changes.replacements),
                    "statusChanged": sorted(changes.status_changed),
                }
            )
        )

    async def _admin_reset(self, request: web.Request) -> web.StreamResponse:
        self.reset()
        return web.Response(status=204)


ENTITY_ENDPOINTS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "brands": (frozenset({"id", "search"}), frozenset({"id", "name"})),
    "organizations": (frozenset({"id", "type", "name", "search"}), frozenset({"id", "name"})),
    "public-categories": (frozenset({"id", "parent", "search"}), frozenset({"id"})),
    "product-families": (frozenset({"id", "search"}), frozenset({"id", "name"})),
    "active-ingredients": (frozenset({"id", "search"}), frozenset({"id"})),
}


class _Throttle:
    """Paces writes to ``rate`` bytes/s in small pieces: the stream trickles like the real one."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self.piece = 64 << 10 if rate is None else max(1024, int(rate / 20))
        self.started = time.monotonic()
        self.sent = 0

    async def write(self, response: web.StreamResponse, data: bytes) -> None:
        if self.rate is None:
            if data:
                await response.write(data)
            return
        for start in range(0, len(data), self.piece):
            piece = data[start : start + self.piece]
            await response.write(piece)
            self.sent += len(piece)
            delay = self.started + self.sent / self.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)


async def _json_body(request: web.Request, *, empty_ok: bool = False) -> Any:
    raw = await request.read()
    if not raw.strip() and empty_ok:
        return {}
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return _error(400, "bad_request", f"The request body is not valid JSON: {exc}.")


async def _product_query(request: web.Request, *, paged: bool) -> ProductQuery | web.Response:
    """The request's product query, or the 400/422 answer that refuses it."""
    body = await _json_body(request)
    if isinstance(body, web.Response):
        return body
    try:
        return parse_product_query(body, paged=paged)
    except InvalidRequest as exc:
        return _invalid(exc)


def _error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return _json_response(error_body(status, code, message), status, headers)


def _invalid(exc: InvalidRequest) -> web.Response:
    body = {
        "error": {
            "status": 422,
            "code": "validation_failed",
            "message": "The request is invalid.",
            "violations": [
                {"propertyPath": v.propertyPath, "message": v.message} for v in exc.violations
            ],
        }
    }
    return _json_response(orjson.dumps(body), 422)


def _json_response(
    body: bytes, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(body=body, status=status, content_type="application/json", headers=headers)


def _plain(name: Any) -> str:
    return name.get("en", "") if isinstance(name, dict) else str(name)
