"""The apiserver as a kubelet sees it: a few REST calls, a watch, and the API's timestamps."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx

from catalogsync.dev.controlplane import ClusterAccess

Obj = dict[str, Any]

SMP = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"


def now() -> str:
    """RFC 3339 timestamp with second precision, as the API stores them."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiError(RuntimeError):
    """A non-2xx answer from the apiserver."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:500]}")
        self.status = status


class Api:
    """The few REST calls a kubelet makes, over one HTTP/1.1 connection pool."""

    def __init__(self, access: ClusterAccess) -> None:
        self.access = access
        self.client = httpx.AsyncClient(
            base_url=access.server,
            verify=access.ssl_context(),
            timeout=httpx.Timeout(30.0),
            limits=httpx.Limits(max_connections=50),
        )

    async def close(self) -> None:
        await self.client.aclose()

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        params: Mapping[str, str] | None = None,
    ) -> Obj:
        content = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": content_type} if content is not None else {}
        response = await self.client.request(
            method, path, content=content, headers=headers, params=params
        )
        if response.status_code >= 300:
            raise ApiError(response.status_code, response.text)
        result: Obj = response.json() if response.content else {}
        return result

    async def get(self, path: str, params: Mapping[str, str] | None = None) -> Obj:
        return await self.request("GET", path, params=params)

    async def get_optional(self, path: str) -> Obj | None:
        """The object, or None on 404."""
        try:
            return await self.get(path)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def watch(self, path: str, resource_version: str) -> AsyncIterator[Obj]:
        """Events of one watch request, until the server closes it."""
        params = {
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": "240",
        }
        async with self.client.stream(
            "GET", path, params=params, timeout=httpx.Timeout(30.0, read=300.0)
        ) as response:
            if response.status_code >= 300:
                raise ApiError(response.status_code, (await response.aread()).decode())
            async for line in response.aiter_lines():
                if line.strip():
                    yield json.loads(line)
