"""Run notifications: the webhook payload, and the sender against a real local HTTP server."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from catalogsync.common.config import load
from catalogsync.operator.notify import Notifier, WebhookSettings, build_payload

SUCCEEDED: dict[str, Any] = {
    "metadata": {
        "namespace": "sync",
        "name": "medipim-au-20260301-0200",
        "uid": "u-1",
        "labels": {"catalogsync.io/trigger": "scheduled", "catalogsync.io/schedule": "nightly"},
    },
    "spec": {"catalog": "medipim-au"},
    "status": {
        "phase": "Succeeded",
        "startTime": "2026-03-01T02:00:05Z",
        "completionTime": "2026-03-01T02:04:17Z",
        "duration": "4m12s",
        "message": "synced 1200 products",
        "fetcher": {"records": 1200, "total": 1200, "bytes": 4_000_000, "attempts": 1},
        "maintainer": {
            "processed": 1200,
            "inserted": 20,
            "updated": 30,
            "skipped": 1150,
            "deleted": 0,
            "invalid": 0,
            "attempts": 1,
            "chunksDone": 1,
        },
    },
}

FAILED: dict[str, Any] = {
    "metadata": {"namespace": "sync", "name": "medipim-au-manual-x", "uid": "u-2"},
    "spec": {"mode": "FetchOnly"},
    "status": {
        "phase": "Failed",
        "startTime": "2026-03-01T02:00:05Z",
        "completionTime": "2026-03-01T02:00:35Z",
        "duration": "30s",
        "message": "fetch failed: credentials rejected",
        "fetcher": {"attempts": 1},
        "failure": {
            "stage": "fetcher",
            "reason": "InvalidCredentials",
            "exitCode": 2,
            "podName": "medipim-au-manual-x-fetcher-abcde",
            "message": "MediPim rejected the API key (401)",
        },
    },
}


def test_payload_of_a_success_has_counts_duration_and_a_readable_line() -> None:
    payload = build_payload(SUCCEEDED)
    assert payload["kind"] == "CatalogSyncFinished"
    assert payload["event"] == "SyncSucceeded"
    assert payload["ok"] is True
    assert payload["run"] == {
        "namespace": "sync",
        "name": "medipim-au-20260301-0200",
        "uid": "u-1",
        "catalog": "medipim-au",
        "mode": "Full",
        "dryRun": False,
        "trigger": "scheduled",
        "schedule": "nightly",
    }
    assert payload["durationSeconds"] == 252
    assert payload["fetcher"] == {"records": 1200, "total": 1200, "bytes": 4_000_000, "attempts": 1}
    assert payload["maintainer"]["inserted"] == 20
    assert "chunksDone" not in payload["maintainer"]
    assert payload["failure"] is None
    assert payload["text"] == (
        "catalogsync sync/medipim-au-20260301-0200 (medipim-au) Succeeded in 4m12s: "
        "20 inserted, 30 updated, 1150 skipped, 0 deleted, 0 invalid"
    )


def test_payload_of_a_failure_carries_the_cause() -> None:
    payload = build_payload(FAILED)
    assert payload["event"] == "SyncFailed"
    assert payload["ok"] is False
    assert payload["run"]["mode"] == "FetchOnly"
    assert payload["durationSeconds"] == 30
    assert payload["failure"] == FAILED["status"]["failure"]
    assert payload["text"] == (
        "catalogsync sync/medipim-au-manual-x (medipim-au) Failed in 30s: InvalidCredentials "
        "in fetcher: MediPim rejected the API key (401)"
    )


def test_payload_tolerates_a_run_without_status() -> None:
    payload = build_payload({"metadata": {"namespace": "n", "name": "r"}})
    assert payload["phase"] == "Unknown"
    assert payload["durationSeconds"] is None
    assert payload["text"] == "catalogsync n/r (medipim-au) Unknown"


def test_settings_without_url_mean_no_notifier(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CATALOGSYNC_WEBHOOK_URL", raising=False)
    monkeypatch.delenv("CATALOGSYNC_WEBHOOK_URL_FILE", raising=False)
    assert Notifier.from_settings(load(WebhookSettings)) is None


@dataclass
class Receiver:
    """A webhook endpoint whose answers the test scripts, one per request."""

    url: str
    answers: list[int | str]
    """HTTP statuses to return in order; ``"hang"`` waits until ``release`` is set."""
    received: list[Any] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)


StartReceiver = Callable[[list[int | str]], Awaitable[Receiver]]


@pytest.fixture
async def receiver() -> AsyncIterator[StartReceiver]:
    runners: list[web.AppRunner] = []
    made: list[Receiver] = []

    async def start(answers: list[int | str]) -> Receiver:
        state: list[Receiver] = []

        async def hook(request: web.Request) -> web.Response:
            rec = state[0]
            rec.received.append(await request.json())
            rec.arrived.set()
            answer = rec.answers.pop(0) if rec.answers else 200
            if answer == "hang":
                await rec.release.wait()
                answer = 200
            return web.json_response({"ok": True}, status=int(answer))

        app = web.Application()
        app.router.add_post("/hooks/secret-token", hook)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        rec = Receiver(f"http://127.0.0.1:{port}/hooks/secret-token", answers)
        state.append(rec)
        runners.append(runner)
        made.append(rec)
        return rec

    yield start
    for rec in made:
        rec.release.set()
    for runner in runners:
        await runner.cleanup()


def fast(url: str, **kwargs: Any) -> Notifier:
    options: dict[str, Any] = {"timeout": 2.0, "attempts": 3, "backoff": 0.0, "max_backoff": 0.0}
    options.update(kwargs)
    return Notifier(url, **options)


async def test_transient_failures_are_retried_until_accepted(receiver: StartReceiver) -> None:
    rec = await receiver([500, 503, 200])
    notifier = fast(rec.url)
    try:
        assert await notifier.send(build_payload(SUCCEEDED)) is True
    finally:
        await notifier.aclose()
    assert len(rec.received) == 3
    assert all(body == build_payload(SUCCEEDED) for body in rec.received)


async def test_rate_limit_is_retried_but_a_client_error_is_not(receiver: StartReceiver) -> None:
    rec = await receiver([429, 400, 200])
    notifier = fast(rec.url)
    try:
        assert await notifier.send(build_payload(FAILED)) is False
    finally:
        await notifier.aclose()
    assert len(rec.received) == 2


async def test_gives_up_after_the_configured_attempts_without_leaking_the_url(
    receiver: StartReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    rec = await receiver([500, 500, 500, 500])
    notifier = fast(rec.url, attempts=2)
    with caplog.at_level(logging.INFO, logger="catalogsync.operator.notify"):
        try:
            assert await notifier.send(build_payload(FAILED)) is False
        finally:
            await notifier.aclose()
    assert len(rec.received) == 2
    assert "dropped after 2 attempts" in caplog.text
    assert "secret-token" not in caplog.text


async def test_a_hanging_receiver_times_out_and_is_retried(receiver: StartReceiver) -> None:
    rec = await receiver(["hang", 200])
    notifier = fast(rec.url, timeout=0.3)
    try:
        assert await notifier.send(build_payload(SUCCEEDED)) is True
    finally:
        await notifier.aclose()
    assert len(rec.received) == 2


async def test_an_unreachable_receiver_is_retried_then_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    notifier = fast(f"http://127.0.0.1:{port}/hooks/secret-token", attempts=2)
    with caplog.at_level(logging.WARNING, logger="catalogsync.operator.notify"):
        try:
            assert await notifier.send(build_payload(SUCCEEDED)) is False
        finally:
            await notifier.aclose()
    assert "ConnectError" in caplog.text
    assert "secret-token" not in caplog.text


async def test_finished_returns_at_once_and_never_blocks_the_caller(
    receiver: StartReceiver,
) -> None:
    rec = await receiver(["hang"])
    notifier = fast(rec.url, timeout=60.0)
    task = notifier.finished(SUCCEEDED)
    await asyncio.sleep(0)
    assert not task.done()
    assert notifier.pending == 1
    await rec.arrived.wait()  # the request is in flight, held by the receiver
    assert not task.done()
    rec.release.set()
    assert await task is True
    assert notifier.pending == 0
    await notifier.aclose()


async def test_close_cancels_notices_still_pending_after_the_grace(receiver: StartReceiver) -> None:
    rec = await receiver(["hang"])
    notifier = fast(rec.url, timeout=60.0)
    task = notifier.finished(FAILED)
    await rec.arrived.wait()
    await notifier.aclose(grace=0.05)
    assert task.cancelled()


async def test_the_url_file_is_read_at_every_notice(
    receiver: StartReceiver, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A mounted Secret that is rotated (or not there yet) needs no operator restart."""
    rec = await receiver([200, 200])
    url_file = tmp_path / "url"
    notifier = Notifier(url_file=str(url_file), timeout=2.0, attempts=2, backoff=0.0)
    try:
        with caplog.at_level(logging.WARNING, logger="catalogsync.operator.notify"):
            assert await notifier.send(build_payload(SUCCEEDED)) is False
        assert "cannot read the webhook URL file" in caplog.text
        url_file.write_text(rec.url + "\n")
        assert await notifier.send(build_payload(SUCCEEDED)) is True
        url_file.write_text("")
        assert await notifier.send(build_payload(SUCCEEDED)) is False
    finally:
        await notifier.aclose()
    assert len(rec.received) == 1


async def test_the_webhook_payload_is_redacted(receiver: StartReceiver) -> None:
    rec = await receiver([200])
    notifier = fast(rec.url)
    leaky = {
        **FAILED,
        "status": {
            **FAILED["status"],
            "failure": {
                **FAILED["status"]["failure"],
                "message": "cannot reach postgresql://sync:Hook#Pass99@127.0.0.1:1/db",
            },
        },
    }
    try:
        assert await notifier.send(build_payload(leaky)) is True
    finally:
        await notifier.aclose()
    assert "Hook#Pass99" not in repr(rec.received)
    assert "sync:***@127.0.0.1:1/db" in repr(rec.received)
