"""``catalogsync kubelet``: register Nodes on a (local) cluster and run their pods until stopped."""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from catalogsync.dev.controlplane import ClusterAccess
from catalogsync.dev.kubelet.images import ImageRule
from catalogsync.dev.kubelet.kubelet import ProcessKubelet
from catalogsync.dev.kubelet.nodes import NodeConfig


def parse_node(spec: str) -> NodeConfig:
    """``name[,cpu=8][,memory=32Gi][,pods=110][,label=k=v][,taint=k=v:Effect]`` as a NodeConfig."""
    name, *items = spec.split(",")
    options: dict[str, Any] = {}
    labels: dict[str, str] = {}
    taints: list[dict[str, str]] = []
    for item in items:
        key, _, value = item.partition("=")
        if key == "label":
            label, _, label_value = value.partition("=")
            labels[label] = label_value
        elif key == "taint":
            body, _, effect = value.rpartition(":")
            taint_key, _, taint_value = body.partition("=")
            taints.append({"key": taint_key, "value": taint_value, "effect": effect})
        elif key in ("cpu", "memory", "ephemeral_storage"):
            options[key] = value
        elif key == "pods":
            options[key] = int(value)
        else:
            raise ValueError(f"unknown node option {key!r} in {spec!r}")
    return NodeConfig(name=name, labels=labels, taints=taints, **options)


def main(argv: Sequence[str] | None = None) -> int:
    """``catalogsync kubelet``: register Nodes on a (local) cluster and run their pods."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="catalogsync kubelet",
        description="Run pods bound to the given Nodes as local processes (see the module docs). "
        "Needs a client-certificate kubeconfig with rights over nodes and pods, such as the one "
        "`python -m catalogsync.dev.controlplane` prints.",
    )
    parser.add_argument("--kubeconfig", type=Path, default=os.environ.get("KUBECONFIG"))
    parser.add_argument(
        "--node",
        action="append",
        type=parse_node,
        default=[],
        metavar="SPEC",
        help="name[,cpu=8][,memory=32Gi][,pods=110][,label=k=v][,taint=k=v:Effect]; repeatable",
    )
    parser.add_argument("--workdir", type=Path, help="pod directories and logs (default: temp)")
    parser.add_argument(
        "--image",
        action="append",
        default=[],
        metavar="NAME",
        help="image repository name that maps to local commands (default: catalogsync)",
    )
    args = parser.parse_args(argv)
    if args.kubeconfig is None:
        parser.error("--kubeconfig or KUBECONFIG is required")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="catalogsync-kubelet-"))
    access = ClusterAccess.from_kubeconfig(args.kubeconfig, workdir / "credentials")
    images = ImageRule(project_images=tuple(args.image or ["catalogsync"]))
    nodes = args.node or [NodeConfig(name="node-1")]
    asyncio.run(_serve(access, workdir, images, nodes))
    return 0


async def _serve(
    access: ClusterAccess, workdir: Path, images: ImageRule, nodes: Sequence[NodeConfig]
) -> None:
    kubelet = ProcessKubelet(access, workdir, images=images)
    await kubelet.start(nodes)
    print(f"nodes {', '.join(n.name for n in nodes)} ready; pod logs in {workdir}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await kubelet.stop()
