"""The TUS client: tuspy, with a deadline on every request and no retries of its own.

tuspy knows the protocol (headers, metadata encoding, offsets); it waits forever on a silent
server and its own retries sleep in the calling thread, so each request here is made exactly once,
with a timeout, and ``SupabaseStorage`` decides what follows a failure with ``tus_action``.
tuspy is only partly annotated, hence the relaxed checks for this module.
"""

# mypy: disable-error-code="no-untyped-call,misc,union-attr,arg-type,assignment,attr-defined"

from __future__ import annotations

from typing import IO
from urllib.parse import urljoin

import requests
from tusclient.client import TusClient
from tusclient.exceptions import TusCommunicationError, TusUploadFailed
from tusclient.request import TusRequest
from tusclient.uploader.uploader import Uploader

__all__ = ["TusCommunicationError", "TusUploader", "describe", "new_uploader"]


def describe(exc: TusCommunicationError) -> str:
    content = exc.response_content
    text = content.decode("utf-8", "replace") if isinstance(content, bytes) else str(content or "")
    if exc.status_code is None:
        return str(exc.args[0] if exc.args else exc)[:300]
    return f"HTTP {exc.status_code}: {text[:300]}"


class TusUploader(Uploader):
    """tuspy's uploader with a deadline on every request (tuspy itself would wait forever).

    Retries are ours (see ``SupabaseStorage._send``), so each method makes exactly one request.
    """

    request_timeout: float = 120.0

    def create_url(self) -> str:
        location = self._header(
            "POST", self.client.url, self.get_url_creation_headers(), "location", "creating"
        )
        return urljoin(self.client.url, location)

    def get_offset(self) -> int:
        offset = self._header("HEAD", self.url, self.get_headers(), "upload-offset", "reading")
        return int(offset)

    def _header(self, method: str, url: str, headers: dict[str, str], name: str, what: str) -> str:
        """One bodiless request; the response header ``name``, without which it failed.

        Redirects are not followed: ``requests`` would turn a redirected POST into a GET.
        """
        try:
            response = requests.request(
                method, url, headers=headers, timeout=self.request_timeout, allow_redirects=False
            )
        except requests.RequestException as exc:
            raise TusCommunicationError(exc) from exc
        value = response.headers.get(name)
        if value is None or not response.ok:
            raise TusCommunicationError(
                f"{what} the upload ({name}) failed", response.status_code, response.content
            )
        return str(value)

    def _do_request(self) -> None:
        self.request = _TimedRequest(self)
        self.request.perform()
        if not 200 <= self.request.status_code < 300:
            raise TusUploadFailed("", self.request.status_code, self.request.response_content)


class _TimedRequest(TusRequest):
    def __init__(self, uploader: TusUploader) -> None:
        super().__init__(uploader)
        self.timeout = uploader.request_timeout

    def perform(self) -> None:
        chunk = self.file.read(self._content_length)
        try:
            response = requests.patch(
                self._url, data=chunk, headers=self._request_headers, timeout=self.timeout
            )
        except requests.RequestException as exc:
            raise TusUploadFailed(exc) from exc
        self.status_code = response.status_code
        self.response_content = response.content
        self.response_headers = {k.lower(): v for k, v in response.headers.items()}


def new_uploader(
    url: str,
    *,
    headers: dict[str, str],
    stream: IO[bytes],
    chunk_size: int,
    metadata: dict[str, str],
    timeout: float,
) -> TusUploader:
    """A fresh uploader that remembers nothing: no URL storage, no fingerprints, no reuse.

    tuspy's URL storage keys uploads by a fingerprint of the file's first 64 KiB and size, not by
    object name, and never forgets a finished upload, so a later run would "resume" an old one.
    """
    uploader = TusUploader(
        file_stream=stream,
        client=TusClient(url, headers=headers),
        chunk_size=chunk_size,
        metadata=metadata,
        store_url=False,
    )
    uploader.request_timeout = timeout
    return uploader
