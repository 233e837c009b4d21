"""Tell someone when a run ends: an optional webhook beside the Kubernetes events.

Events are always written (by the handlers); a webhook is for people who do not watch the cluster.
Its URL often embeds a token (Slack, Teams and Mattermost incoming webhooks do), so it comes from a
Secret and is never logged: the chart mounts the Secret as a file named by
``CATALOGSYNC_WEBHOOK_URL_FILE``, read at every notice so a rotated Secret needs no restart
(``CATALOGSYNC_WEBHOOK_URL`` holding the URL itself works too, e.g. outside Kubernetes).

Sending must never hold up or fail a run: :meth:`Notifier.finished` only schedules a background
task, which retries transient failures with exponential backoff and then gives up with a warning.
The payload is plain JSON with the run's counts, duration and failure cause, plus a ``text`` line
so that chat webhooks show something readable without a template.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from catalogsync.common import redact
from catalogsync.common.retry import RetryPolicy
from catalogsync.common.summaries import MAINTAINER_OUTCOMES
from catalogsync.operator.status import parse_time

log = logging.getLogger(__name__)

PAYLOAD_KIND = "CatalogSyncFinished"
TERMINAL_EVENTS = {
    "Succeeded": "SyncSucceeded",
    "Failed": "SyncFailed",
    "Cancelled": "SyncCancelled",
    "Skipped": "SyncSkipped",
}
FETCHER_COUNTS = ("records", "total", "bytes", "attempts", "object", "sha256")
MAINTAINER_COUNTS = ("total", "processed", *MAINTAINER_OUTCOMES, "attempts")


class WebhookSettings(BaseSettings):
    """Read by the operator at start; the chart fills them from ``notifications.webhook``."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    url: str = Field("", alias="CATALOGSYNC_WEBHOOK_URL", repr=False)
    url_file: str = Field("", alias="CATALOGSYNC_WEBHOOK_URL_FILE")
    """A file holding the URL (a mounted Secret key); wins over ``url``."""
    timeout: float = Field(10.0, alias="CATALOGSYNC_WEBHOOK_TIMEOUT", gt=0)
    """Seconds for one attempt (connect + send + response)."""
    attempts: int = Field(5, alias="CATALOGSYNC_WEBHOOK_ATTEMPTS", ge=1, le=20)
    backoff: float = Field(2.0, alias="CATALOGSYNC_WEBHOOK_BACKOFF", ge=0)
    """First retry delay in seconds; doubles per attempt (with jitter) up to ``max_backoff``."""
    max_backoff: float = Field(60.0, alias="CATALOGSYNC_WEBHOOK_MAX_BACKOFF", ge=0)


def _seconds(start: str | None, end: str | None) -> int | None:
    began, ended = parse_time(start), parse_time(end)
    if began is None or ended is None:
        return None
    return max(0, round((ended - began).total_seconds()))


def _pick(source: Mapping[str, Any] | None, keys: tuple[str, ...]) -> dict[str, Any]:
    source = source or {}
    return {key: source[key] for key in keys if source.get(key) is not None}


def build_payload(body: Mapping[str, Any]) -> dict[str, Any]:
    """The webhook's JSON for a finished CatalogSync (``body`` as kopf hands it to a handler)."""
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    labels = meta.get("labels") or {}
    phase = status.get("phase") or "Unknown"
    failure = status.get("failure") or None
    fetcher = _pick(status.get("fetcher"), FETCHER_COUNTS)
    maintainer = _pick(status.get("maintainer"), MAINTAINER_COUNTS)
    payload: dict[str, Any] = {
        "kind": PAYLOAD_KIND,
        "event": TERMINAL_EVENTS.get(phase, f"Sync{phase}"),
        "ok": phase == "Succeeded",
        "phase": phase,
        "run": {
            "namespace": meta.get("namespace"),
            "name": meta.get("name"),
            "uid": meta.get("uid"),
            "catalog": spec.get("catalog") or labels.get("catalogsync.io/catalog") or "medipim-au",
            "mode": spec.get("mode") or "Full",
            "dryRun": bool((spec.get("maintainer") or {}).get("dryRun", False)),
            "trigger": labels.get("catalogsync.io/trigger"),
            "schedule": labels.get("catalogsync.io/schedule"),
        },
        "startTime": status.get("startTime"),
        "completionTime": status.get("completionTime"),
        "durationSeconds": _seconds(status.get("startTime"), status.get("completionTime")),
        "duration": status.get("duration"),
        "message": status.get("message"),
        "fetcher": fetcher,
        "maintainer": maintainer,
        "failure": _pick(failure, ("stage", "reason", "exitCode", "podName", "message"))
        if failure
        else None,
    }
    payload["text"] = summary_line(payload)
    return payload


def summary_line(payload: Mapping[str, Any]) -> str:
    """One human line, e.g. for a chat channel: what ran, how it ended, what it changed."""
    run = payload["run"]
    head = f"catalogsync {run['namespace']}/{run['name']} ({run['catalog']}) {payload['phase']}"
    if payload.get("duration"):
        head += f" in {payload['duration']}"
    failure = payload.get("failure")
    if failure:
        cause = failure.get("reason") or "Error"
        where = f" in {failure['stage']}" if failure.get("stage") else ""
        detail = f": {failure['message']}" if failure.get("message") else ""
        return f"{head}: {cause}{where}{detail}"
    counts = payload.get("maintainer") or {}
    parts = [f"{counts[k]} {k}" for k in MAINTAINER_OUTCOMES if k in counts]
    if parts:
        return f"{head}: " + ", ".join(parts)
    if payload.get("message"):
        return f"{head}: {payload['message']}"
    return head


class _Retryable(Exception):
    """An attempt that may succeed later: no connection, a timeout, 408, 429 or a 5xx."""


class _Rejected(Exception):
    """The receiver refused the notice (a 3xx or 4xx): retrying cannot help."""


class Notifier:
    """Sends run outcomes to one webhook in the background, never raising into the operator."""

    def __init__(
        self,
        url: str = "",
        *,
        url_file: str = "",
        timeout: float = 10.0,
        attempts: int = 5,
        backoff: float = 2.0,
        max_backoff: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not url and not url_file:
            raise ValueError("a webhook needs a URL or a file holding one")
        self._url = url
        self._url_file = Path(url_file) if url_file else None
        self._attempts = attempts
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            transport=transport,
            headers={"User-Agent": "catalogsync-notifier"},
            follow_redirects=False,
        )
        self._tasks: set[asyncio.Task[bool]] = set()

    @classmethod
    def from_settings(cls, settings: WebhookSettings) -> Notifier | None:
        """A notifier when a webhook URL is configured, else None (events only)."""
        if not settings.url and not settings.url_file:
            return None
        return cls(
            settings.url,
            url_file=settings.url_file,
            timeout=settings.timeout,
            attempts=settings.attempts,
            backoff=settings.backoff,
            max_backoff=settings.max_backoff,
        )

    @property
    def pending(self) -> int:
        return len(self._tasks)

    def finished(self, body: Mapping[str, Any]) -> asyncio.Task[bool]:
        """Schedule the notice for a finished run and return at once."""
        payload = build_payload(body)
        task = asyncio.get_running_loop().create_task(
            self.send(payload), name=f"webhook {payload['run']['name']}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def send(self, payload: Mapping[str, Any]) -> bool:
        """POST ``payload``, retrying transient failures; True when the receiver accepted it."""
        run = payload.get("run") or {}
        what = f"{run.get('namespace')}/{run.get('name')} {payload.get('event')}"
        policy = RetryPolicy(self._attempts, self._backoff, self._max_backoff)
        retrying = policy.retrying(_Retryable, f"webhook notice for {what}")
        try:
            async for attempt in retrying:
                with attempt:
                    await self._post(payload)
        except _Retryable as exc:
            log.warning(
                "webhook notice for %s dropped after %d attempts: %s", what, self._attempts, exc
            )
            return False
        except _Rejected as exc:
            log.warning("webhook notice for %s rejected, not retried: %s", what, exc)
            return False
        log.info("webhook notified of %s", what)
        return True

    def _current_url(self) -> str:
        if self._url_file is None:
            return self._url
        try:
            url = self._url_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise _Rejected(
                f"cannot read the webhook URL file {self._url_file}: {exc.strerror}"
            ) from None
        if not url:
            raise _Rejected(f"the webhook URL file {self._url_file} is empty")
        redact.register(url)
        return url

    async def _post(self, payload: Mapping[str, Any]) -> None:
        url = self._current_url()
        try:
            response = await self._client.post(url, json=redact.value(payload))
        except httpx.TransportError as exc:
            # The exception text may quote the URL (and its token): name only the failure's kind.
            raise _Retryable(type(exc).__name__) from None
        if response.status_code in (408, 429) or response.status_code >= 500:
            raise _Retryable(f"HTTP {response.status_code}")
        if response.status_code >= 300:
            raise _Rejected(f"HTTP {response.status_code}")

    async def aclose(self, grace: float = 5.0) -> None:
        """Give pending notices ``grace`` seconds to finish, cancel the rest, close the client."""
        pending = set(self._tasks)
        if pending:
            _, late = await asyncio.wait(pending, timeout=grace)
            for task in late:
                task.cancel()
            for task in late:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._client.aclose()
