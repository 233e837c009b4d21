"""How fast ``catalogsync fetch`` moves a full catalog, and how much memory it needs doing it.

The fetcher runs as the Job runs it (a ``catalogsync fetch`` process) against the unthrottled
simulator and the local storage server, each in a process of its own. Its throughput (catalog
bytes over the command's wall time, download + checks + TUS upload + publish) is reported as a
ratio to the simulator's raw streaming rate measured in the same run (``bench_simulator``), so
the number means the same on a faster or slower machine. Peak RSS comes from the kernel's
accounting of the fetcher process (``wait4``); the target is under 150 MB.

    nice .venv/bin/python bench/bench_fetch.py                    # both profiles, ~600 MB each
    nice .venv/bin/python bench/bench_fetch.py --profile wide --products 20000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.bench_simulator import running_simulator, stream_rate
from catalogsync.dev.storage_server import StorageServer

RSS_TARGET_MB = 150
ENV_PREFIXES = ("MEDIPIM_", "STORAGE_", "FETCHER_", "SYNC_", "CATALOGSYNC_")


def run_fetch(env: dict[str, str], workdir: Path) -> dict[str, Any]:
    """One ``catalogsync fetch``: its summary, wall time and peak RSS."""
    message = workdir / "termination-log"
    env = env | {"CATALOGSYNC_TERMINATION_MESSAGE_PATH": str(message)}
    started = time.perf_counter()
    with (workdir / "fetch.log").open("wb") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "catalogsync", "fetch"], env=env, stderr=log
        )
        _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    if child.returncode != 0:
        raise RuntimeError(f"fetch exited with {child.returncode}; see {workdir / 'fetch.log'}")
    summary: dict[str, Any] = json.loads(message.read_bytes())
    return {"summary": summary, "seconds": seconds, "peak_rss_mb": usage.ru_maxrss / 1024}


async def bench_profile(profile: str, extra: list[str]) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="bench-fetch-") as tmp,
        running_simulator("--profile", profile, *extra) as sim,
    ):
        workdir = Path(tmp)
        raw = await asyncio.to_thread(stream_rate, sim.url, sim.auth)
        async with StorageServer(workdir / "storage", buckets=["medipim-raw"]) as storage:
            env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIXES)}
            env |= {
                "MEDIPIM_URL": sim.url,
                "MEDIPIM_API_KEY_ID": sim.key_id,
                "MEDIPIM_API_KEY_SECRET": sim.key_secret,
                "STORAGE_URL": storage.url,
                "STORAGE_SERVICE_ROLE_KEY": storage.service_key,
                "FETCHER_SCRATCH_DIR": str(workdir),
                "SYNC_RUN_ID": f"bench-{profile}",
                "CATALOGSYNC_LOG_FORMAT": "json",
            }
            fetched = await asyncio.to_thread(run_fetch, env, workdir)
    summary = fetched["summary"]
    fetch_mb_s = summary["bytes"] / fetched["seconds"] / 1e6
    download_mb_s = summary["bytes"] / summary["seconds"]["download"] / 1e6
    return {
        "profile": profile,
        "simulator_args": ["--profile", profile, *extra],
        "bytes": summary["bytes"],
        "records": summary["records"],
        "raw_stream_mb_per_s": round(raw.mb_per_s, 1),
        "fetch_seconds": round(fetched["seconds"], 2),
        "download_seconds": summary["seconds"]["download"],
        "store_seconds": summary["seconds"]["store"],
        "fetch_mb_per_s": round(fetch_mb_s, 1),
        "download_mb_per_s": round(download_mb_s, 1),
        "fetch_ratio": round(fetch_mb_s / raw.mb_per_s, 3),
        "download_ratio": round(download_mb_s / raw.mb_per_s, 3),
        "peak_rss_mb": round(fetched["peak_rss_mb"], 1),
        "rss_within_target": fetched["peak_rss_mb"] < RSS_TARGET_MB,
    }


async def amain(profiles: list[str], extra: list[str]) -> list[dict[str, Any]]:
    return [await bench_profile(profile, extra) for profile in profiles]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--profile", choices=["au", "wide"], action="append")
    p.add_argument("--products", type=int)
    p.add_argument("--line-bytes", type=int)
    args = p.parse_args(argv)
    extra: list[str] = []
    if args.products:
        extra += ["--products", str(args.products)]
    if args.line_bytes:
        extra += ["--line-bytes", str(args.line_bytes)]
    results = asyncio.run(amain(args.profile or ["au", "wide"], extra))
    print(
        json.dumps({"benchmark": "fetch", "cpu_count": os.cpu_count(), "runs": results}, indent=2)
    )
    return 0 if all(r["rss_within_target"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
