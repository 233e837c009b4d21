"""The one start/stop shape of the local servers, so each is used the same way.

``with server:`` / ``async with server:`` start it and stop it on the way out, whatever happened
inside; a subclass writes only ``start`` and ``stop``.
"""

from __future__ import annotations

import abc
from typing import Self


class Service(abc.ABC):
    """A server started and stopped synchronously (PostgreSQL, the control plane).

    Also an async context manager, for async code that owns one: start and stop block briefly.
    """

    @abc.abstractmethod
    def start(self) -> object: ...

    @abc.abstractmethod
    def stop(self) -> None: ...

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return self.__enter__()

    async def __aexit__(self, *exc_info: object) -> None:
        self.stop()


class AsyncService(abc.ABC):
    """A server started and stopped on the event loop (the storage server, the simulator)."""

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def stop(self) -> None: ...

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
