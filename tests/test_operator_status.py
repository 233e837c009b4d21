"""Status formatting: durations, percentages, conditions, and the minimal patch."""

from __future__ import annotations

import datetime as dt

import pytest

from catalogsync.operator.status import changed, condition, format_duration, percent
from tests.operator_objects import NOW


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (59.9, "59s"), (252, "4m12s"), (3600, "1h0m0s"), (3725, "1h2m5s"), (-3, "0s")],
)
def test_durations_read_like_kubectl(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    ("done", "total", "text"),
    [(37, 100, "37%"), (0, 5, "0%"), (5, 5, "100%"), (7, 5, "100%"), (1, 3, "33%"),
     (3, 0, None), (3, None, None)],
)  # fmt: skip
def test_percent_floors_and_caps(done: int, total: int | None, text: str | None) -> None:
    assert percent(done, total) == text


def test_a_condition_keeps_its_transition_time_until_its_status_changes() -> None:
    first = condition("Succeeded", "Unknown", "Fetching", "a", now=NOW, generation=1)
    later = NOW + dt.timedelta(minutes=3)
    same = condition("Succeeded", "Unknown", "Maintaining", "b", now=later, generation=1,
                     previous=[first])  # fmt: skip
    assert same["lastTransitionTime"] == first["lastTransitionTime"]
    flipped = condition("Succeeded", "True", "SyncSucceeded", "c", now=later, generation=1,
                        previous=[same])  # fmt: skip
    assert flipped["lastTransitionTime"] == "2026-05-01T12:03:00Z"
    assert flipped["observedGeneration"] == 1


def test_changed_keeps_only_what_would_change() -> None:
    current = {"phase": "Fetching", "fetcher": {"jobName": "j", "records": 5}}
    patch = {"phase": "Fetching", "fetcher": {"jobName": "j", "records": 6}, "message": None}
    assert changed(current, patch) == {"fetcher": {"records": 6}}
    assert changed(current, {"phase": "Fetching"}) == {}
