"""The loopback guard itself: a test that reaches beyond loopback fails before a packet leaves."""

from __future__ import annotations

import socket

import httpx
import pytest

from tests.plugins.loopback import NotLoopback, is_loopback


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.5.6.7", "::1", "[::1]", "localhost", b"127.0.0.1"]
)
def test_loopback_targets_are_allowed(host: str | bytes) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["192.0.2.1", "10.0.0.1", "203.0.113.9", "example.invalid", "db"])
def test_other_targets_are_not(host: str) -> None:
    assert not is_loopback(host)


def test_connecting_beyond_loopback_fails_before_any_packet() -> None:
    with socket.socket() as sock, pytest.raises(NotLoopback, match=r"192\.0\.2\.1:80"):
        sock.connect(("192.0.2.1", 80))  # TEST-NET-1: reserved, never routed


def test_a_name_lookup_beyond_loopback_fails() -> None:
    with pytest.raises(NotLoopback, match=r"example\.invalid"):
        socket.getaddrinfo("example.invalid", 443)


async def test_an_http_client_cannot_reach_beyond_loopback() -> None:
    async with httpx.AsyncClient() as client:
        with pytest.raises((NotLoopback, httpx.ConnectError)):
            await client.get("http://example.invalid/")


def test_a_closed_loopback_port_is_the_unreachable_host() -> None:
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
        sock.connect(("127.0.0.1", 1))
