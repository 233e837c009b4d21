"""The one console command, ``catalogsync``, and its subcommands.

Subcommand modules are imported only when chosen, so ``catalogsync fetch`` does not pay for kopf
and ``catalogsync operator`` does not pay for asyncpg. Each module exposes ``main(argv) -> int``
and owns its own argument parser (and so its own ``--help``).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

COMMANDS: dict[str, tuple[str, str]] = {
    "operator": ("catalogsync.operator.main", "run the kopf operator that drives CatalogSync runs"),
    "fetch": (
        "catalogsync.fetcher.main",
        "stream MediPim's catalog into storage (the fetcher job)",
    ),
    "maintain": ("catalogsync.maintainer.main", "upsert a fetched catalog into PostgreSQL"),
    "create-run": ("catalogsync.operator.create_run", "create a CatalogSync (used by the CronJob)"),
    "demo": ("catalogsync.dev.demo", "run a full sync locally on embedded servers"),
    "simulator": ("catalogsync.dev.simulator", "serve a simulated MediPim AU API"),
    "storage-server": ("catalogsync.dev.storage_server", "serve a local Supabase Storage API"),
    "kubelet": ("catalogsync.dev.kubelet", "play the kubelet for a local control plane"),
}


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="catalogsync",
        description="Keep a PostgreSQL products table in sync with MediPim's AU catalog.",
    )
    commands = root.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, help_text) in COMMANDS.items():
        commands.add_parser(name, help=help_text, add_help=False)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in COMMANDS:
        parser().parse_args(args)  # prints usage or help and exits
        return 2
    module = importlib.import_module(COMMANDS[args[0]][0])
    result: int = module.main(args[1:])
    return result


if __name__ == "__main__":
    sys.exit(main())
