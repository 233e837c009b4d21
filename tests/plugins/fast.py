"""``pytest --fast``: the tests that need no server process and no build, for a quick loop.

A test counts as needing a server when it uses one of the fixtures that start PostgreSQL, the
storage server or the control plane (directly or through another fixture); it is then marked
``servers``. ``--fast`` deselects those, the ``kube`` and ``slow`` tests, and the tests listed in
:data:`PROCESS_TESTS`, which start processes of their own or build. The MediPim simulator runs in
the test's own event loop and stays in. ``scripts/test.sh`` runs everything.
"""

from __future__ import annotations

import pytest

SERVER_FIXTURES = frozenset({"pg", "storage_server", "make_storage_server", "control_plane"})
SLOW_MARKERS = ("servers", "kube", "slow")
PROCESS_TESTS = (
    "tests/test_release.py",  # builds the wheel and the sdist
    "tests/test_postgres_fixture.py",  # starts and kills PostgreSQL servers of its own
    "tests/test_storage_server.py",  # the storage server's command line (node)
    "tests/test_chart_monitoring.py",  # promtool on the rendered rules
    "tests/test_layers.py",  # a fresh interpreter
    "tests/test_fetcher.py::test_file_storage_end_to_end",  # catalogsync fetch as a process
    "tests/test_simulator.py::test_a_live_mutation_bumps_updated_at_of_every_change_to_its_instant",
    "tests/test_simulator.py::test_query_stops_at_10000_results",
    "tests/test_simulator.py::test_filters_select_what_they_say",
    "tests/test_simulator.py::test_mean_line_size_follows_the_parameter",
    "tests/test_create_run.py::test_main_reports_a_missing_template_as_a_permanent_failure",
    "tests/test_create_run.py::test_dry_run_without_a_job_prints_the_run_and_needs_no_cluster",
)
"""Node-id prefixes of tests that take seconds each: processes, builds, big catalogs."""


def _slow(item: pytest.Item) -> bool:
    return item.nodeid.startswith(PROCESS_TESTS) or any(
        item.get_closest_marker(m) for m in SLOW_MARKERS
    )


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fast",
        action="store_true",
        help="only the tests that start no server and need no build (see docs/testing.md)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "servers: starts PostgreSQL, the storage server or the control plane"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.servers)
    if not config.getoption("--fast"):
        return
    kept = [i for i in items if not _slow(i)]
    deselected = [i for i in items if i not in kept]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept
