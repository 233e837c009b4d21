"""Downloading MediPim's product stream to a scratch file, checked as it passes.

The body goes straight to disk in the chunks httpx hands over, so memory stays flat whatever the
catalog's size; each line is validated on the way (see ``validate``) and the bytes are hashed.
MediPim's stream has no resume cursor, so a dropped or truncated stream is fetched again from the
start, into the same scratch file, after an exponential backoff with jitter.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import IO, Any

import httpx

from catalogsync.common.config import FetcherSettings, MedipimSettings
from catalogsync.common.errors import PermanentError, TransientError
from catalogsync.common.lines import LineSplitter
from catalogsync.common.retry import RetryPolicy
from catalogsync.fetcher.validate import EXCERPT, StreamAccount

log = logging.getLogger(__name__)

PROJECT_URL = "https://github.com/catalogsync/catalogsync"
STREAM_PATH = "/v4/products/stream"
MAX_ERROR_BODY = 2000


def user_agent() -> str:
    """MediPim refuses generic user agents; say who we are and where to find us."""
    try:
        release = version("catalogsync")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        release = "0"
    return f"catalogsync/{release} (+{PROJECT_URL})"


class SourceUnavailable(TransientError):
    """MediPim could not be reached or answered 429/5xx; ``retry_after`` is its hint, if any."""

    reason = "SourceUnavailable"

    def __init__(self, message: str, *, retry_after: float = 0.0, reason: str | None = None):
        super().__init__(message, reason=reason)
        self.retry_after = retry_after


@dataclass(frozen=True)
class StreamResult:
    """A complete stream on disk. ``total`` is ``meta.total``; 0 with ``empty`` for a 204."""

    path: Path
    bytes: int
    records: int
    total: int
    sha256: str
    attempts: int
    empty: bool = False


Progress = Callable[[int, int, int | None, int], Awaitable[None]]
"""Called as (bytes, records, meta.total, attempt) while a stream arrives."""


def _retry_after(error: BaseException) -> float:
    """The wait MediPim asked for with the failure (429/503 ``Retry-After``), 0 for none."""
    return error.retry_after if isinstance(error, SourceUnavailable) else 0.0


def retry_after_seconds(value: str | None) -> float:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date; 0 when absent or unreadable."""
    if not value:
        return 0.0
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return 0.0
    return max(0.0, when.timestamp() - time.time())


def response_error(
    status: int, body: bytes, settings: MedipimSettings, retry_after: str | None
) -> Exception:
    """The exception for a non-200/204 answer, by the exit-code contract."""
    text = body[:MAX_ERROR_BODY].decode("utf-8", "replace").strip()
    if status in (401, 403):
        return PermanentError(
            f"MediPim rejected the API key (HTTP {status}): check keys 'apiKeyId' and "
            f"'apiKeySecret' of Secret '{settings.credentials_secret}' "
            "(MEDIPIM_API_KEY_ID / MEDIPIM_API_KEY_SECRET)",
            reason="InvalidCredentials",
        )
    if status == 429 or status >= 500 or status == 408:
        return SourceUnavailable(
            f"MediPim answered HTTP {status}: {text[:300]}",
            retry_after=retry_after_seconds(retry_after),
        )
    if status in (400, 422):
        return PermanentError(
            f"MediPim refused the request (HTTP {status}): {text[:1000]} (check MEDIPIM_FILTER "
            "and MEDIPIM_SORTING)",
            reason="InvalidRequest",
        )
    return PermanentError(
        f"MediPim answered HTTP {status} at {settings.url}{STREAM_PATH}: {text[:300]} "
        "(check MEDIPIM_URL)",
        reason="InvalidConfiguration",
    )


class StreamDownloader:
    """Fetches the stream into ``scratch``, retrying transient failures up to ``max_attempts``."""

    def __init__(
        self,
        medipim: MedipimSettings,
        fetcher: FetcherSettings,
        scratch: Path,
        *,
        progress: Progress | None = None,
    ) -> None:
        self.medipim = medipim
        self.fetcher = fetcher
        self.scratch = scratch
        self.progress = progress
        self.retry = RetryPolicy(
            attempts=fetcher.max_attempts,
            initial=fetcher.backoff_initial,
            maximum=fetcher.backoff_max,
        )
        self.attempts = 0

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.medipim.url.rstrip("/"),
            auth=httpx.BasicAuth(self.medipim.api_key_id, self.medipim.api_key_secret),
            headers={"User-Agent": user_agent(), "Accept": "application/x-ndjson"},
            timeout=httpx.Timeout(self.fetcher.read_timeout, connect=30.0),
        )

    async def download(self) -> StreamResult:
        """The complete stream, or the last attempt's error once the attempts are spent."""
        retrying = self.retry.retrying(
            TransientError,
            "the MediPim stream (each attempt fetches it from the start)",
            retry_after=_retry_after,
        )
        try:
            async with self._client() as client:
                async for attempt in retrying:
                    with attempt:
                        return await self._attempt(client)
        except TransientError as exc:
            raise TransientError(
                f"giving up after {self.attempts} attempt(s) (FETCHER_MAX_ATTEMPTS): {exc}",
                reason=exc.reason,
            ) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def _attempt(self, client: httpx.AsyncClient) -> StreamResult:
        self.attempts += 1
        body = {"filter": self.medipim.filter, "sorting": self.medipim.sorting}
        try:
            async with asyncio.timeout(self.fetcher.timeout):
                async with client.stream("POST", STREAM_PATH, json=body) as response:
                    return await self._receive(response)
        except TimeoutError:
            raise SourceUnavailable(
                f"the stream took longer than FETCHER_TIMEOUT={self.fetcher.timeout:g}s",
                reason="StreamTimeout",
            ) from None
        except httpx.TimeoutException as exc:
            raise SourceUnavailable(
                f"MediPim sent nothing for FETCHER_READ_TIMEOUT={self.fetcher.read_timeout:g}s "
                f"({type(exc).__name__})",
                reason="StreamStalled",
            ) from exc
        except httpx.TransportError as exc:
            raise SourceUnavailable(
                f"the connection to MediPim failed: {type(exc).__name__}: {exc}"
            ) from exc

    async def _receive(self, response: httpx.Response) -> StreamResult:
        if response.status_code == 204:
            await asyncio.to_thread(self.scratch.write_bytes, b"")
            empty = hashlib.sha256().hexdigest()
            return StreamResult(self.scratch, 0, 0, 0, empty, self.attempts, empty=True)
        if response.status_code != 200:
            content = b""
            async for chunk in response.aiter_bytes():
                content += chunk
                if len(content) >= MAX_ERROR_BODY:
                    break
            raise response_error(
                response.status_code, content, self.medipim, response.headers.get("retry-after")
            )
        out = await asyncio.to_thread(self.scratch.open, "wb")
        try:
            return await self._copy(response, out)
        finally:
            out.close()

    async def _copy(self, response: httpx.Response, out: IO[bytes]) -> StreamResult:
        account = StreamAccount()
        digest = hashlib.sha256()
        received = 0
        splitter = LineSplitter(keep=EXCERPT)
        async for chunk in response.aiter_bytes():
            out.write(chunk)
            digest.update(chunk)
            received += len(chunk)
            for line in splitter.feed(chunk):
                account.feed(line)
            account.check_partial(splitter.overflow)
            if self.progress is not None:
                await self.progress(received, account.records, account.total, self.attempts)
        account.finish(splitter.end())
        out.flush()
        total = account.total or 0
        if self.progress is not None:
            await self.progress(received, account.records, total, self.attempts)
        return StreamResult(
            self.scratch, received, account.records, total, digest.hexdigest(), self.attempts
        )


def describe_request(medipim: MedipimSettings) -> dict[str, Any]:
    """What is being fetched, for the log (never the credentials)."""
    return {
        "url": f"{medipim.url.rstrip('/')}{STREAM_PATH}",
        "filter": medipim.filter,
        "sorting": medipim.sorting,
    }
