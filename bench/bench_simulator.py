"""How fast the MediPim simulator can stream, unthrottled, to a plain httpx client.

This is the ceiling for the fetcher: the fetcher benchmark reports its throughput against it.
The simulator runs in its own process (as in the demo), so client and server do not share a GIL.

    .venv/bin/python bench/bench_simulator.py                 # the au profile (~600 MB stream)
    .venv/bin/python bench/bench_simulator.py --profile wide
    .venv/bin/python bench/bench_simulator.py --products 50000 --line-bytes 2000 --repeat 5

Other benchmarks reuse ``running_simulator()`` and ``stream_rate()``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from catalogsync.dev.processes import free_port
from catalogsync.dev.simulator import PROFILES

KEY_ID = "42"
KEY_SECRET = "bench-secret-0123456789abcdef"
ACTIVE_BY_ID = {"filter": {"status": "active"}, "sorting": {"id": "ASC"}}


@dataclass(frozen=True)
class StreamRate:
    bytes: int
    lines: int
    seconds: float
    first_byte: float

    @property
    def mb_per_s(self) -> float:
        return self.bytes / self.seconds / 1e6


@dataclass(frozen=True)
class RunningSimulator:
    url: str
    key_id: str
    key_secret: str
    build_seconds: float

    @property
    def auth(self) -> tuple[str, str]:
        return self.key_id, self.key_secret


def stream_rate(
    url: str, auth: tuple[str, str], body: dict[str, Any] | None = None, chunk: int = 1 << 20
) -> StreamRate:
    """Download one products/stream response and count it; nothing is parsed or kept."""
    total = newlines = 0
    started = time.perf_counter()
    first = 0.0
    with (
        httpx.Client(timeout=httpx.Timeout(60, read=600)) as client,
        client.stream(
            "POST", f"{url}/v4/products/stream", auth=auth, json=body or ACTIVE_BY_ID
        ) as r,
    ):
        r.raise_for_status()
        for data in r.iter_raw(chunk):
            if not first:
                first = time.perf_counter() - started
            total += len(data)
            newlines += data.count(b"\n")
    return StreamRate(total, newlines, time.perf_counter() - started, first)


@contextlib.contextmanager
def running_simulator(
    *simulator_args: str, startup_timeout: float = 1800
) -> Iterator[RunningSimulator]:
    """Render the catalog (cached), then serve it from a child process until the block ends."""
    base = [sys.executable, "-m", "catalogsync", "simulator", *simulator_args]
    started = time.perf_counter()
    subprocess.run([*base, "--build-only"], check=True, stdout=subprocess.DEVNULL)
    built = time.perf_counter() - started
    port = free_port()
    args = [*base, "--port", str(port), "--key-id", KEY_ID, "--key-secret", KEY_SECRET]
    args += ["--rate-limit", "0"]
    child = subprocess.Popen(args, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(url, child, startup_timeout)
        yield RunningSimulator(url, KEY_ID, KEY_SECRET, built)
    finally:
        child.terminate()
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _wait_until_up(url: str, child: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise RuntimeError(f"the simulator exited with {child.returncode}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/__sim__/stats", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise TimeoutError(f"the simulator at {url} did not come up within {timeout:.0f}s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--profile", choices=sorted(PROFILES), default="au")
    p.add_argument("--products", type=int)
    p.add_argument("--line-bytes", type=int)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument(
        "--all-statuses", action="store_true", help="stream every product, not just active"
    )
    args = p.parse_args(argv)
    simulator_args = ["--profile", args.profile]
    if args.products:
        simulator_args += ["--products", str(args.products)]
    if args.line_bytes:
        simulator_args += ["--line-bytes", str(args.line_bytes)]
    body: dict[str, Any] = dict(ACTIVE_BY_ID)
    if args.all_statuses:
        body["filter"] = {"status": ["active", "inactive", "replaced", "no_selection"]}
    with running_simulator(*simulator_args) as sim:
        rates = [stream_rate(sim.url, sim.auth, body) for _ in range(args.repeat)]
    best = max(rates, key=lambda r: r.mb_per_s)
    report = {
        "benchmark": "simulator-stream",
        "simulator": simulator_args,
        "cpu_count": os.cpu_count(),
        "build_seconds": round(sim.build_seconds, 2),
        "runs": [asdict(r) | {"mb_per_s": round(r.mb_per_s, 1)} for r in rates],
        "best_mb_per_s": round(best.mb_per_s, 1),
        "median_mb_per_s": round(sorted(r.mb_per_s for r in rates)[len(rates) // 2], 1),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
