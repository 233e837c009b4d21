"""The kubelet's HTTPS log endpoint, so ``kubectl logs`` reaches the processes' output."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from catalogsync.dev.kubelet.host import PodLogs, PodLookup


class LogServer:
    """``GET /containerLogs/<ns>/<pod>/<container>`` over HTTPS, so ``kubectl logs`` works.

    The apiserver reaches it at the Node's InternalIP and ``daemonEndpoints`` port (it runs with
    ``--kubelet-preferred-address-types=InternalIP`` and, having no kubelet CA, does not verify
    the self-signed certificate). Supported query parameters: ``follow``, ``tailLines``,
    ``limitBytes``; restarts append to one file, so ``previous`` is not distinguished.
    """

    def __init__(self, kubelet: PodLookup, directory: Path) -> None:
        self.kubelet = kubelet
        self.directory = directory
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/containerLogs/{namespace}/{pod}/{container}", self._logs)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self._ssl_context())
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.Server)
        self.port = int(server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _ssl_context(self) -> ssl.SSLContext:
        self.directory.mkdir(parents=True, exist_ok=True)
        cert, key = self.directory / "kubelet.crt", self.directory / "kubelet.key"
        write_self_signed(cert, key, "process-kubelet", ("127.0.0.1", "localhost"))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(cert), str(key))
        return context

    async def _logs(self, request: web.Request) -> web.StreamResponse:
        info = request.match_info
        try:
            worker = self.kubelet.worker(info["namespace"], info["pod"])
        except LookupError as exc:
            raise web.HTTPNotFound(text=str(exc)) from None
        path = worker.log_file(info["container"])
        data = _read_from(path, 0)
        if tail := request.query.get("tailLines"):
            lines = data.splitlines(keepends=True)
            data = b"".join(lines[-int(tail) :]) if int(tail) > 0 else b""
        if limit := request.query.get("limitBytes"):
            data = data[: int(limit)]
        if request.query.get("follow") not in ("true", "1"):
            return web.Response(body=data, content_type="text/plain")
        response = web.StreamResponse()
        response.content_type = "text/plain"
        await response.prepare(request)
        await response.write(data)
        await self._follow(worker, path, len(_read_from(path, 0)), response)
        await response.write_eof()
        return response

    @staticmethod
    async def _follow(
        worker: PodLogs, path: Path, offset: int, response: web.StreamResponse
    ) -> None:
        """Stream what the container writes until the pod's worker is done."""
        while True:
            done = worker.finished
            chunk = _read_from(path, offset)
            if chunk:
                offset += len(chunk)
                await response.write(chunk)
            if done:
                return
            await asyncio.sleep(0.2)


def _read_from(path: Path, offset: int) -> bytes:
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            return handle.read()
    except FileNotFoundError:
        return b""


def write_self_signed(cert_file: Path, key_file: Path, name: str, hosts: Sequence[str]) -> None:
    """A self-signed serving certificate (the apiserver does not verify kubelets here)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from catalogsync.dev.controlplane import subject_alt_names

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName(subject_alt_names(hosts)), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
