"""A simulated catalog: its parameters, its versions, and its pre-rendered cache file.

Rendering 600 MB of products takes a while, streaming it must not, so each (parameters, version)
is rendered once into ``<cache>/simulator/<name>.ndjson`` (one product record per line, sorted by
id, embed signatures as fixed-width placeholders) with an index sidecar (offsets, statuses,
timestamps) and a facts sidecar (codes and relation ids for filters). The cache directory is
``$CATALOGSYNC_CACHE/simulator``, else ``$XDG_CACHE_HOME/catalogsync/simulator``, else
``~/.cache/catalogsync/simulator``; delete it freely.
"""

from __future__ import annotations

import bisect
import fcntl
import mmap
import os
import time
from array import array
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import orjson
import xxhash

from catalogsync.dev.cache import cache_root as project_cache
from catalogsync.dev.simulator.generator import (
    FORMAT,
    STATUS_CODES,
    Generator,
    ProductState,
    Rendered,
    product_id,
)
from catalogsync.dev.simulator.versions import (
    ChangeSet,
    History,
    Mutation,
    check_live_times,
    history,
    version_time,
)

PARALLEL_THRESHOLD = 20_000
"""Catalogs at least this large render in worker processes."""
_CHUNK = 2_000


@dataclass(frozen=True)
class Profile:
    name: str
    products: int
    line_bytes: int
    about: str


PROFILES = {
    "au": Profile(
        "au",
        127_000,
        5_600,
        "MediPim AU as captured once: ~108,000 active products (of ~127,000) at ~5.6 KB per "
        "line, so the default status=active stream is ~600 MB",
    ),
    "wide": Profile(
        "wide",
        353_000,
        2_000,
        "~300,000 active products (of ~353,000) at ~2 KB per line, ~600 MB active stream",
    ),
    "small": Profile("small", 2_000, 2_000, "test-sized: 2,000 products at ~2 KB per line"),
}


def cache_root() -> Path:
    """The simulator's part of the project's cache (:func:`catalogsync.dev.cache.cache_root`)."""
    return project_cache() / "simulator"


class Catalog:
    """One version of a deterministic simulated catalog.

    Cheap to create: nothing is rendered until ``snapshot()`` (or a server) needs the bytes, and
    ``ids()`` / ``changes()`` only replay the version history.
    """

    def __init__(
        self,
        seed: int = 1,
        products: int = 2_000,
        line_bytes: int = 2_000,
        version: int = 1,
        *,
        mutation: Mutation | None = None,
        times: tuple[int, ...] = (),
        cache_dir: Path | str | None = None,
        workers: int | None = None,
    ) -> None:
        version_time(version)
        check_live_times(times)
        if line_bytes < 1:
            raise ValueError(f"line_bytes must be positive, not {line_bytes}")
        self.seed = seed
        self.products = products
        self.line_bytes = line_bytes
        self.version = version
        self.mutation = mutation or Mutation()
        self.times = tuple(times)
        """Change instants of live versions 2, 3, ... (see ``advance``)."""
        self.cache_dir = Path(cache_dir) if cache_dir else cache_root()
        self.workers = workers if workers is not None else min(2, os.cpu_count() or 1)
        self._snapshot: Snapshot | None = None

    @classmethod
    def profile(cls, name: str, **overrides: Any) -> Catalog:
        try:
            chosen = PROFILES[name]
        except KeyError:
            raise ValueError(
                f"unknown profile {name!r}; choose one of {sorted(PROFILES)}"
            ) from None
        params: dict[str, Any] = {"products": chosen.products, "line_bytes": chosen.line_bytes}
        return cls(**(params | overrides))

    def at(self, version: int) -> Catalog:
        """The same catalog at another version (sharing the version history)."""
        return Catalog(
            self.seed,
            self.products,
            self.line_bytes,
            version,
            mutation=self.mutation,
            times=self.times,
            cache_dir=self.cache_dir,
            workers=self.workers,
        )

    def advance(self, at: int | None = None) -> Catalog:
        """The next version as a *live* one: every product it changes (content, status,
        replacement, addition) carries ``meta.updatedAt == at`` (default: now, in unix seconds).

        This is how a test mutates the catalog between two runs: a run that started before
        ``at`` and asks for ``updatedSince`` at or before ``at`` gets exactly the changes.
        """
        if self.version != len(self.times) + 1:
            raise ValueError(
                f"{self!r} follows the simulated calendar; advance() continues only version 1 "
                "or a live version"
            )
        instant = int(time.time()) if at is None else at
        if instant < self.taken_at:
            raise ValueError(f"{instant} is before {self!r} was taken ({self.taken_at})")
        return Catalog(
            self.seed,
            self.products,
            self.line_bytes,
            self.version + 1,
            mutation=self.mutation,
            times=(*self.times, instant),
            cache_dir=self.cache_dir,
            workers=self.workers,
        )

    def __repr__(self) -> str:
        return (
            f"Catalog(seed={self.seed}, products={self.products}, line_bytes={self.line_bytes}, "
            f"version={self.version})"
        )

    # -- expectations, no rendering needed ----------------------------------------------------

    @property
    def history(self) -> History:
        return history(self.seed, self.products, self.mutation, self.times[: self.version - 1])

    @property
    def taken_at(self) -> int:
        """Snapshot time of this version: every ``meta.updatedAt`` in it is earlier."""
        return self.history.taken_at(self.version)

    def states(self) -> dict[int, ProductState]:
        return self.history.states(self.version)

    def ids(self, status: str | None = None) -> list[str]:
        """Product ids in this version (optionally of one status), sorted as the feed sorts them."""
        code = None if status is None else STATUS_CODES[status]
        return sorted(
            product_id(self.seed, s.slot)
            for s in self.states().values()
            if code is None or s.status == code
        )

    def changes(self) -> ChangeSet:
        """What this version changed relative to the previous one (empty for version 1)."""
        return self.history.changes(self.version)

    # -- rendered bytes -----------------------------------------------------------------------

    @property
    def name(self) -> str:
        params: dict[str, Any] = {
            "format": FORMAT,
            "seed": self.seed,
            "products": self.products,
            "line_bytes": self.line_bytes,
            "version": self.version,
        }
        if self.version > 1:
            params["mutation"] = self.mutation.key()
        if self.times[: self.version - 1]:
            params["times"] = self.times[: self.version - 1]
        digest = xxhash.xxh64_hexdigest(orjson.dumps(params, option=orjson.OPT_SORT_KEYS))[:8]
        return f"s{self.seed}-p{self.products}-b{self.line_bytes}-v{self.version}-{digest}"

    @property
    def path(self) -> Path:
        return self.cache_dir / f"{self.name}.ndjson"

    def snapshot(self) -> Snapshot:
        """The rendered version, built into the cache on first use and memory-mapped."""
        if self._snapshot is None:
            self.build()
            self._snapshot = Snapshot(self.path)
        return self._snapshot

    def build(self) -> Path:
        """Render into the cache unless already there; concurrent builders wait for each other."""
        index = _index_path(self.path)
        if index.exists():
            return self.path
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not index.exists():
                self._render()
        return self.path

    def product(self, product_id: str) -> dict[str, Any]:
        """One product as the feed carries it (embed signature left as a placeholder)."""
        snapshot = self.snapshot()
        position = snapshot.position(product_id)
        if position is None:
            raise KeyError(f"{product_id} is not in {self!r}")
        result: dict[str, Any] = orjson.loads(snapshot.record(position))
        return result

    def records(self) -> Iterator[dict[str, Any]]:
        snapshot = self.snapshot()
        for position in range(snapshot.count):
            yield orjson.loads(snapshot.record(position))

    def close(self) -> None:
        if self._snapshot is not None:
            self._snapshot.close()
            self._snapshot = None

    def _render(self) -> None:
        states = sorted(self.states().values(), key=lambda s: product_id(self.seed, s.slot))
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        columns: dict[str, list[Any]] = {
            k: [] for k in ("ids", "offsets", "lengths", "embed", "status", "created", "updated")
        }
        facts: list[dict[str, Any]] = []
        offset = 0
        with open(tmp, "wb", buffering=8 << 20) as out:
            for state, (record, embed, fact) in zip(states, self._rendered(states), strict=True):
                out.write(record)
                out.write(b"\n")
                columns["ids"].append(product_id(self.seed, state.slot))
                columns["offsets"].append(offset)
                columns["lengths"].append(len(record))
                columns["embed"].append(embed)
                columns["status"].append(state.status)
                columns["created"].append(state.created_at)
                columns["updated"].append(state.updated_at)
                facts.append(fact)
                offset += len(record) + 1
        _facts_path(self.path).write_bytes(orjson.dumps(facts))
        os.replace(tmp, self.path)
        index_tmp = tmp.with_suffix(".index.tmp")
        index_tmp.write_bytes(orjson.dumps({"format": FORMAT, "count": len(states)} | columns))
        os.replace(index_tmp, _index_path(self.path))

    def _rendered(self, states: list[ProductState]) -> Iterator[tuple[bytes, int, Any]]:
        """(record, embed offset, facts) per state, copying unchanged records from the previous
        version's cache when it exists: a new version only renders what it changed."""
        previous_catalog = self.at(self.version - 1) if self.version > 1 else None
        if previous_catalog is None or not _index_path(previous_catalog.path).exists():
            yield from self._render_states(states)
            return
        before = previous_catalog.states()
        fresh = [s for s in states if before.get(s.slot) != s]
        fresh_slots = {s.slot for s in fresh}
        rendered = self._render_states(fresh)
        previous = Snapshot(previous_catalog.path)
        try:
            for state in states:
                if state.slot in fresh_slots:
                    yield next(rendered)
                    continue
                position = previous.position(product_id(self.seed, state.slot))
                assert position is not None, f"{state} is unchanged but not in {previous.path}"
                yield (
                    bytes(previous.record(position)),
                    previous.embed[position],
                    previous.facts[position],
                )
        finally:
            previous.close()

    def _render_states(self, states: list[ProductState]) -> Iterator[tuple[bytes, int, Any]]:
        params = (self.seed, self.products, self.line_bytes)
        if len(states) < PARALLEL_THRESHOLD or self.workers < 2:
            generator = Generator(*params)
            for state in states:
                out = generator.render(state)
                yield out.record, out.embed_offset, out.facts.to_json()
            return
        chunks = [(params, states[i : i + _CHUNK]) for i in range(0, len(states), _CHUNK)]
        with ProcessPoolExecutor(self.workers, initializer=_lower_priority) as pool:
            for rendered in pool.map(_render_chunk, chunks):
                for out in rendered:
                    yield out.record, out.embed_offset, out.facts.to_json()


_worker_generators: dict[tuple[int, int, int], Generator] = {}
"""Per worker process: building a generator calibrates it, so do it once per catalog."""


def _lower_priority() -> None:
    os.nice(5)  # rendering is background work on a shared machine


def _render_chunk(job: tuple[tuple[int, int, int], list[ProductState]]) -> list[Rendered]:
    params, states = job
    if params not in _worker_generators:
        _worker_generators[params] = Generator(*params)
    generator = _worker_generators[params]
    return [generator.render(state) for state in states]


def _index_path(path: Path) -> Path:
    return path.with_suffix(".index.json")


def _facts_path(path: Path) -> Path:
    return path.with_suffix(".facts.json")


class Snapshot:
    """A rendered version, memory-mapped, with its index columns in memory."""

    def __init__(self, path: Path) -> None:
        index = orjson.loads(_index_path(path).read_bytes())
        if index.get("format") != FORMAT:
            raise RuntimeError(f"{path} was rendered by another simulator version; delete it")
        self.path = path
        self.count: int = index["count"]
        self.ids: list[str] = index["ids"]
        self.id_bytes = [i.encode() for i in self.ids]
        self.offsets = array("q", index["offsets"])
        self.lengths = array("q", index["lengths"])
        self.embed = array("q", index["embed"])
        self.status = bytes(index["status"])
        self.created = array("q", index["created"])
        self.updated = array("q", index["updated"])
        self._file = open(path, "rb")  # noqa: SIM115 - lives as long as the snapshot
        self.data = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        self.view = memoryview(self.data)

    @cached_property
    def facts(self) -> list[dict[str, Any]]:
        loaded: list[dict[str, Any]] = orjson.loads(_facts_path(self.path).read_bytes())
        return loaded

    def record(self, position: int) -> memoryview:
        start = self.offsets[position]
        return self.view[start : start + self.lengths[position]]

    def position(self, product_id: str) -> int | None:
        """Where ``product_id`` is (records are sorted by id), or None."""
        at = bisect.bisect_left(self.ids, product_id)
        return at if at < self.count and self.ids[at] == product_id else None

    def close(self) -> None:
        self.view.release()
        self.data.close()
        self._file.close()
