"""Loopback only: a test process that connects anywhere but 127.0.0.0/8 or ::1 fails loudly.

An audit hook sees every ``socket.connect`` and every name lookup of the test process (asyncio,
httpx, aiohttp, asyncpg and the kubernetes clients all go through them) and raises on a target
that is neither a loopback address nor ``localhost``, so an "unreachable host" can only be a
closed loopback port and a test can never depend on outside DNS or a network. Subprocesses are
configured by the tests with loopback URLs; this hook guards the test process itself.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from typing import Any

LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain"})
WILDCARDS = frozenset({"", "0.0.0.0", "::"})  # noqa: S104 - recognised, not bound
"""Addresses a server binds to; looked up when listening, never a target."""


class NotLoopback(OSError):
    """Raised where a test process tried to reach beyond loopback."""


def is_loopback(host: Any) -> bool:
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if not isinstance(host, str):
        return False
    name = host.strip("[]").split("%")[0].lower()
    if name in LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event == "socket.getaddrinfo":
        host = args[0]
        if host is None or host in WILDCARDS or is_loopback(host):
            return
        raise NotLoopback(f"a test looked up {host!r}: tests may only reach loopback addresses")
    if event == "socket.connect":
        sock, address = args
        if getattr(sock, "family", None) not in (socket.AF_INET, socket.AF_INET6):
            return  # Unix sockets (PostgreSQL, the kubelet) are local by construction
        if isinstance(address, tuple) and address and not is_loopback(address[0]):
            raise NotLoopback(
                f"a test connected to {address[0]}:{address[1]}: tests may only reach "
                "127.0.0.0/8 or ::1 (an unreachable host is a closed loopback port)"
            )


def pytest_configure() -> None:
    sys.addaudithook(_audit)
