"""The shared contract: configuration errors, exit codes and termination messages."""

from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc
from pathlib import Path

import orjson
import pytest

from catalogsync.common.config import (
    DatabaseSettings,
    MaintainerSettings,
    MedipimSettings,
    StorageSettings,
    env_name,
    load,
    validate_table_name,
)
from catalogsync.common.errors import ExitCode, PermanentError
from catalogsync.common.lines import MAX_LINE_BYTES, LineSplitter, LongLine
from catalogsync.common.progress import (
    TERMINATION_MESSAGE_LIMIT,
    Snapshot,
    Throttle,
    termination_message,
)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("products", "public.products"),
        ("catalog.products", "catalog.products"),
        ("_p1", "public._p1"),
    ],
)
def test_table_names_accepted(name: str, expected: str) -> None:
    assert validate_table_name(name) == expected


@pytest.mark.parametrize(
    "name",
    [
        "products; drop table x",
        'public."products"',
        "Products",
        "a.b.c",
        "",
        "1products",
        "p" * 64,
        "products--",
        "public.",
    ],
)
def test_hostile_table_names_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="not a valid table name"):
        validate_table_name(name)


def test_invalid_environment_is_a_permanent_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MAINTAINER_CHUNK_SIZE", "50")
    with pytest.raises(PermanentError) as caught:
        load(MaintainerSettings)
    assert "MAINTAINER_CHUNK_SIZE" in str(caught.value)
    assert caught.value.exit_code == ExitCode.PERMANENT


def test_filter_must_be_a_json_object(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDIPIM_FILTER", "[1, 2]")
    with pytest.raises(PermanentError, match="MEDIPIM_FILTER"):
        load(MedipimSettings)
    monkeypatch.setenv("MEDIPIM_FILTER", '{"status": "active"')
    with pytest.raises(PermanentError, match=r"MEDIPIM_FILTER.*not JSON"):
        load(MedipimSettings)
    monkeypatch.setenv("MEDIPIM_FILTER", '{"status": ["active", "replaced"]}')
    assert load(MedipimSettings).filter == {"status": ["active", "replaced"]}


def test_secrets_stay_out_of_reprs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:hunter2@db/x")
    monkeypatch.setenv("STORAGE_URL", "file:///tmp/x")
    monkeypatch.setenv("STORAGE_SERVICE_ROLE_KEY", "s3cr3t-key")
    assert "hunter2" not in repr(load(DatabaseSettings))
    assert "s3cr3t-key" not in repr(load(StorageSettings))


def test_storage_keys_follow_the_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORAGE_URL", "file:///tmp/x")
    monkeypatch.setenv("STORAGE_PREFIX", "au")
    settings = load(StorageSettings)
    assert settings.run_key("r1") == "au/runs/r1.ndjson"
    assert settings.latest_key == "au/latest.ndjson"
    monkeypatch.setenv("STORAGE_PREFIX", "../etc")
    with pytest.raises(PermanentError, match="STORAGE_PREFIX"):
        load(StorageSettings)


def test_env_names_come_from_the_settings() -> None:
    assert env_name(MaintainerSettings, "chunk_size") == "MAINTAINER_CHUNK_SIZE"
    assert env_name(DatabaseSettings, "url") == "DATABASE_URL"


def test_termination_message_fits_the_kubelet_limit() -> None:
    small = {"stage": "fetcher", "ok": True, "records": 3}
    assert orjson.loads(termination_message(small)) == small
    huge = {"stage": "maintainer", "ok": False, "message": "x" * 10_000, "exitCode": 3}
    data = termination_message(huge)
    assert len(data) <= TERMINATION_MESSAGE_LIMIT
    parsed = orjson.loads(data)
    assert parsed["exitCode"] == 3
    assert parsed["message"].endswith("...")


def test_throttle_lets_one_call_through_per_interval() -> None:
    now = [0.0]
    throttle = Throttle(3.0, clock=lambda: now[0])
    assert throttle.ready()
    now[0] = 2.9
    assert not throttle.ready()
    now[0] = 3.0
    assert throttle.ready()


def test_snapshot_percent() -> None:
    assert Snapshot("maintainer", 37, 100, "records").percent == 37
    assert Snapshot("fetcher", 5, None, "bytes").percent is None
    assert Snapshot("fetcher", 150, 100, "records").percent == 100


def test_cli_lists_every_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "catalogsync", "--help"], capture_output=True, text=True, check=True
    )
    for command in ("operator", "fetch", "maintain", "create-run", "demo"):
        assert command in result.stdout


def test_repository_root_does_not_shadow_stdlib_operator(tmp_path: Path) -> None:
    """Started from the repository root, ``import operator`` must still be the standard library."""
    root = Path(__file__).resolve().parents[1]
    assert not (root / "operator" / "__init__.py").exists()
    code = "import operator, json; print(json.dumps(operator.__file__))"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    assert "site-packages" not in result.stdout
    assert json.loads(result.stdout).endswith("operator.py")


def test_lines_are_cut_across_reads() -> None:
    splitter = LineSplitter(keep=3, limit=8)
    found = [line for piece in (b"ab", b"c\nde", b"\n\nf", b"g") for line in splitter.feed(piece)]
    assert found == [b"abc", b"de", b""]
    assert splitter.end() == b"fg"
    assert splitter.end() is None
    assert splitter.feed(b"") == []


@pytest.mark.parametrize("pieces", [[b"12345678\n"], [b"1234", b"5678", b"\n"]])
def test_a_line_at_the_limit_is_kept(pieces: list[bytes]) -> None:
    splitter = LineSplitter(keep=3, limit=8)
    assert [line for piece in pieces for line in splitter.feed(piece)] == [b"12345678"]
    assert splitter.overflow is None


@pytest.mark.parametrize(
    "pieces",
    [[b"ok\n123456789\nok\n"], [b"ok\n12", b"3456", b"789\nok\n"], [b"ok\n12345678", b"9\nok\n"]],
    ids=["one-read", "across-reads", "over-at-the-newline"],
)
def test_a_line_over_the_limit_keeps_its_size_and_head(pieces: list[bytes]) -> None:
    splitter = LineSplitter(keep=3, limit=8)
    found = [line for piece in pieces for line in splitter.feed(piece)]
    assert found == [b"ok", LongLine(9, b"123", 8), b"ok"]
    assert splitter.end() is None


def test_an_unterminated_line_is_reported_once_over_the_limit() -> None:
    splitter = LineSplitter(keep=3, limit=8)
    seen = []
    for piece in (b"1234", b"56789", b"0"):
        assert splitter.feed(piece) == []
        seen.append(splitter.overflow)
    assert seen == [None, LongLine(9, b"123", 8), LongLine(10, b"123", 8)]
    assert splitter.end() == LongLine(10, b"123", 8)
    assert splitter.overflow is None


PIECE = 64 * 1024


def _fed_in_pieces(splitter: LineSplitter, size: int) -> list[bytes | LongLine]:
    """``size`` bytes of one line, each piece a fresh object as a network read would be."""
    for _ in range(size // PIECE):
        assert splitter.feed(b"x" * PIECE) == []
    return splitter.feed(b"x" * (size % PIECE) + b"\n")


def test_a_long_line_is_copied_once_and_past_the_limit_not_held() -> None:
    tracemalloc.start()
    try:
        splitter = LineSplitter(keep=100)
        tracemalloc.reset_peak()
        (line,) = _fed_in_pieces(splitter, MAX_LINE_BYTES)
        _, peak = tracemalloc.get_traced_memory()
        assert line == b"x" * MAX_LINE_BYTES
        del line
        # The pieces and the joined line, once each; ``pending + piece`` would hold three copies.
        assert peak < 2.1 * MAX_LINE_BYTES
        tracemalloc.reset_peak()
        (long_line,) = _fed_in_pieces(splitter, 2 * MAX_LINE_BYTES)
        _, peak = tracemalloc.get_traced_memory()
        assert long_line == LongLine(2 * MAX_LINE_BYTES, b"x" * 100)
        assert peak < 1.1 * MAX_LINE_BYTES  # the pieces are dropped once the line passes the limit
    finally:
        tracemalloc.stop()
