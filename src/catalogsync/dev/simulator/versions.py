"""Catalog versions: what changes between two daily snapshots, decided up front and exactly.

Version 1 is the initial catalog. Version N+1 takes version N and, with a random generator seeded
by (seed, N+1), picks disjoint sets of products to change (new content, ``updatedAt`` bumped),
remove (absent from every later feed), replace (``status: replaced`` pointing at a brand-new
successor) and switch between ``active`` and ``inactive``, and adds new products. Every change
bumps ``meta.updatedAt``, status changes included. Tests get the resulting id sets from
``ChangeSet`` and can assert exact counts instead of "some rows changed".

Versions follow a simulated calendar (version N is taken ``N - 1`` days after ``EPOCH``) unless
they are *live*: a live version's changes all happen at one given instant, normally "now", so a
client that fetched the previous version at wall-clock time T and asks for ``updatedSince`` T
gets exactly them (see ``Catalog.advance``).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache

from catalogsync.dev.simulator.generator import (
    ACTIVE,
    DAY,
    EPOCH,
    INACTIVE,
    REPLACED,
    STATUS_WEIGHTS,
    YEAR,
    ProductState,
    product_id,
    stable_hash,
)


@dataclass(frozen=True)
class Mutation:
    """Share of the previous version's products touched when deriving the next version."""

    changed: float = 0.02
    added: float = 0.005
    removed: float = 0.002
    replaced: float = 0.003
    status_changed: float = 0.0
    """Share switched between ``active`` and ``inactive`` (content otherwise unchanged)."""

    def __post_init__(self) -> None:
        values = (self.changed, self.added, self.removed, self.replaced, self.status_changed)
        if any(v < 0 for v in values) or sum(values) - self.added > 1:
            raise ValueError(
                f"{self}: fractions must be >= 0 and changed + removed + replaced + "
                "status_changed at most 1"
            )

    def key(self) -> dict[str, float]:
        """The fractions that name a rendered version (a zero ``status_changed`` is left out,
        so catalogs rendered before it existed keep their cache names)."""
        fields = {
            "changed": self.changed,
            "added": self.added,
            "removed": self.removed,
            "replaced": self.replaced,
        }
        return fields | ({"status_changed": self.status_changed} if self.status_changed else {})


@dataclass(frozen=True)
class ChangeSet:
    """How ``version`` differs from ``version - 1``, as product ids."""

    version: int
    since: int
    """An ``updatedSince`` value (inclusive) that selects exactly changed, added and replaced."""
    changed: frozenset[str] = frozenset()
    added: frozenset[str] = frozenset()
    """New products, including the successors of replaced ones."""
    removed: frozenset[str] = frozenset()
    replaced: frozenset[str] = frozenset()
    replacements: Mapping[str, str] = field(default_factory=dict)
    """Replaced id -> successor id."""
    status_changed: frozenset[str] = frozenset()
    """Switched between ``active`` and ``inactive``."""

    @property
    def touched(self) -> frozenset[str]:
        """Ids whose ``meta.updatedAt`` is at or after ``since``."""
        return self.changed | self.added | self.replaced | self.status_changed


def version_time(version: int) -> int:
    """When snapshot ``version`` was taken: every ``updatedAt`` in it is earlier."""
    if version < 1:
        raise ValueError(f"catalog versions start at 1, not {version}")
    return EPOCH + (version - 1) * DAY


def check_live_times(times: tuple[int, ...]) -> None:
    """Live change instants must follow version 1 and each other."""
    previous = version_time(1)
    for at in times:
        if at < previous:
            raise ValueError(
                f"live change instants must be increasing and after version 1 ({previous}): {times}"
            )
        previous = at + 1


class History:
    """Product states of every version of one catalog (seed, size, mutation, live instants)."""

    def __init__(
        self, seed: int, products: int, mutation: Mutation, times: tuple[int, ...] = ()
    ) -> None:
        if products < 1:
            raise ValueError(f"a catalog needs at least one product, not {products}")
        check_live_times(times)
        self.seed = seed
        self.mutation = mutation
        self.times = times
        """Change instants of the live versions 2, 3, ... (the rest follow the calendar)."""
        self._versions: list[dict[int, ProductState]] = [self._initial(products)]
        self._changes: list[ChangeSet] = [ChangeSet(1, EPOCH - 10 * YEAR)]
        self._next_slot = products
        self._lock = threading.Lock()

    def states(self, version: int) -> dict[int, ProductState]:
        """Slot -> state of every product present in ``version``."""
        self._extend(version)
        return self._versions[version - 1]

    def changes(self, version: int) -> ChangeSet:
        self._extend(version)
        return self._changes[version - 1]

    def taken_at(self, version: int) -> int:
        """When ``version`` was taken: every ``meta.updatedAt`` in it is earlier."""
        version_time(version)
        live = len(self.times) + 1
        if version <= live:
            return version_time(1) if version == 1 else self.times[version - 2] + 1
        return self.taken_at(live) + (version - live) * DAY

    def window(self, version: int) -> tuple[int, int]:
        """The ``meta.updatedAt`` range of the changes ``version`` makes."""
        if 2 <= version <= len(self.times) + 1:
            at = self.times[version - 2]
            return at, at
        return self.taken_at(version - 1), self.taken_at(version) - 1

    def _initial(self, products: int) -> dict[int, ProductState]:
        cumulative = [sum(STATUS_WEIGHTS[: i + 1]) for i in range(len(STATUS_WEIGHTS))]
        states = {}
        for slot in range(products):
            rng = random.Random(stable_hash("state", self.seed, slot))
            roll = rng.random()
            status = next((i for i, edge in enumerate(cumulative) if roll < edge), ACTIVE)
            created = EPOCH - rng.randrange(2 * DAY, 8 * YEAR)
            updated = created + rng.randrange(0, EPOCH - created - DAY)
            replacement = -1
            if status == REPLACED:
                replacement = rng.randrange(products - 1) if products > 1 else -1
                if replacement == -1:
                    status = ACTIVE
                elif replacement >= slot:
                    replacement += 1
            states[slot] = ProductState(slot, 0, status, replacement, created, updated)
        return states

    def _extend(self, version: int) -> None:
        version_time(version)
        with self._lock:
            while len(self._versions) < version:
                self._derive(len(self._versions) + 1)

    def _derive(self, version: int) -> None:
        previous = self._versions[-1]
        rng = random.Random(stable_hash("version", self.seed, version))
        low, high = self.window(version)
        m = self.mutation
        size = len(previous)
        candidates = sorted(slot for slot, s in previous.items() if s.status != REPLACED)
        n_changed, n_removed, n_replaced = (
            round(f * size) for f in (m.changed, m.removed, m.replaced)
        )
        picks = rng.sample(candidates, min(len(candidates), n_changed + n_removed + n_replaced))
        changed = picks[:n_changed]
        removed = picks[n_changed : n_changed + n_removed]
        replaced = picks[n_changed + n_removed :]
        switched: list[int] = []
        if m.status_changed:
            taken = set(picks)
            switchable = [
                slot
                for slot in candidates
                if slot not in taken and previous[slot].status in (ACTIVE, INACTIVE)
            ]
            n_switched = min(len(switchable), round(m.status_changed * size))
            switched = rng.sample(switchable, n_switched)

        states = dict(previous)
        for slot in changed:
            old = states[slot]
            states[slot] = replace(
                old, revision=old.revision + 1, updated_at=rng.randint(low, high)
            )
        for slot in switched:
            old = states[slot]
            states[slot] = replace(
                old,
                status=INACTIVE if old.status == ACTIVE else ACTIVE,
                updated_at=rng.randint(low, high),
            )
        for slot in removed:
            del states[slot]
        added = []
        for _ in range(round(m.added * size) + len(replaced)):
            slot = self._next_slot
            self._next_slot += 1
            created = rng.randint(low, high)
            states[slot] = ProductState(slot, 0, ACTIVE, -1, created, created)
            added.append(slot)
        successors = added[len(added) - len(replaced) :]
        for slot, successor in zip(replaced, successors, strict=True):
            updated = max(rng.randint(low, high), states[successor].created_at)
            states[slot] = replace(
                states[slot], status=REPLACED, replacement=successor, updated_at=updated
            )

        def ids(slots: list[int]) -> frozenset[str]:
            return frozenset(product_id(self.seed, slot) for slot in slots)

        self._versions.append(states)
        self._changes.append(
            ChangeSet(
                version=version,
                since=low,
                changed=ids(changed),
                added=ids(added),
                removed=ids(removed),
                replaced=ids(replaced),
                replacements={
                    product_id(self.seed, old): product_id(self.seed, new)
                    for old, new in zip(replaced, successors, strict=True)
                },
                status_changed=ids(switched),
            )
        )


@lru_cache(maxsize=8)
def history(seed: int, products: int, mutation: Mutation, times: tuple[int, ...] = ()) -> History:
    """One shared ``History`` per catalog, so switching versions does not replay them all."""
    return History(seed, products, mutation, times)
