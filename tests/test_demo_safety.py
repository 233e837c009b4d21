"""The demo touches only what it made: its own servers, its own marked directory, one at a time."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from catalogsync.common.progress import Snapshot
from catalogsync.dev import demo
from catalogsync.fetcher.main import DOWNLOADED, UPLOADED, FetchProgress


def args(*argv: str) -> argparse.Namespace:
    return demo.parser().parse_args(list(argv))


def test_the_shell_s_service_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://prod:Pr0dPass@127.0.0.1:1/prod")
    monkeypatch.setenv("STORAGE_URL", "http://127.0.0.1:1/storage/v1")
    monkeypatch.setenv("MEDIPIM_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("MAINTAINER_DELETE_MISSING", "true")
    env = demo.base_environment(args())
    assert not {"DATABASE_URL", "STORAGE_URL", "MEDIPIM_URL", "MAINTAINER_DELETE_MISSING"} & set(
        env
    )
    assert "PATH" in env


def test_an_explicit_option_brings_its_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDIPIM_API_KEY_ID", "id")
    monkeypatch.setenv("MEDIPIM_API_KEY_SECRET", "secret")
    assert "MEDIPIM_API_KEY_SECRET" not in demo.base_environment(args())
    env = demo.base_environment(args("--medipim-url", "http://127.0.0.1:1"))
    assert env["MEDIPIM_API_KEY_SECRET"] == "secret"


def test_reset_refuses_a_directory_the_demo_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(demo.DemoError, match="not made by the demo"):
        demo.prepare_data_dir(tmp_path, "small", reset=True)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_each_profile_keeps_its_own_state_and_reset_clears_only_it(tmp_path: Path) -> None:
    data = tmp_path / "demo"
    small = demo.prepare_data_dir(data, "small", reset=False)
    au = demo.prepare_data_dir(data, "au", reset=False)
    assert small != au
    (small / "storage").mkdir()
    (au / "storage").mkdir()
    assert (data / demo.MARKER).is_file()
    demo.prepare_data_dir(data, "small", reset=True)
    assert not (small / "storage").exists()
    assert (au / "storage").exists()


def test_a_second_demo_on_the_same_directory_is_told_so(tmp_path: Path) -> None:
    state = demo.prepare_data_dir(tmp_path / "d", "small", reset=False)
    first = demo.exclusive(state)
    first.__enter__()
    try:
        with (
            pytest.raises(demo.DemoError, match=r"another demo \(pid \d+\) is running"),
            demo.exclusive(state),
        ):
            pass
    finally:
        first.__exit__(None, None, None)
    with demo.exclusive(state):  # free again once the first has ended
        pass


def test_a_dry_run_fetches_into_a_temporary_store(tmp_path: Path) -> None:
    state = demo.prepare_data_dir(tmp_path / "d", "small", reset=False)
    with demo.storage(args("--dry-run"), state) as env:
        scratch = Path(env["STORAGE_URL"].removeprefix("file://"))
        assert scratch.is_dir()
        assert not scratch.is_relative_to(state)
    assert not scratch.exists()
    assert not (state / "storage").exists()


def test_where_it_reads_and_writes_is_printed_without_secrets(tmp_path: Path) -> None:
    env = {
        "MEDIPIM_URL": "http://127.0.0.1:5000",
        "STORAGE_URL": "file:///tmp/x",
        "DATABASE_URL": "postgresql://u:Wh3r3Pass@127.0.0.1:5432/postgres",
    }
    lines = demo.where(env, args("--database-url", env["DATABASE_URL"]), tmp_path)
    text = "\n".join(lines)
    assert "http://127.0.0.1:5000" in text
    assert "file:///tmp/x" in text
    assert "127.0.0.1:5432/postgres" in text
    assert "Wh3r3Pass" not in text


class Recorder:
    def __init__(self) -> None:
        self.snapshots: list[Snapshot] = []

    async def update(self, snapshot: Snapshot) -> None:
        self.snapshots.append(snapshot)

    async def finish(self, snapshot: Snapshot, summary: Any) -> None:
        self.snapshots.append(snapshot)


async def test_the_fetch_bar_label_names_what_it_counts() -> None:
    recorder = Recorder()
    progress = FetchProgress(recorder)  # type: ignore[arg-type]
    await progress.downloading(4_000_000, 2_000, 2_000, 1)
    await progress.uploading(4_000_000, 4_000_000)
    await progress.finish({"object": "runs/x.ndjson"})
    download, upload, final = recorder.snapshots
    assert (download.unit, download.done, download.total) == (DOWNLOADED, 2_000, 2_000)
    assert (upload.unit, upload.done, upload.total) == (UPLOADED, 4_000_000, 4_000_000)
    assert (final.unit, final.done, final.total) == (DOWNLOADED, 2_000, 2_000)
