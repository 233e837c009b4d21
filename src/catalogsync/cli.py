"""The one console command, ``catalogsync``, and its subcommands.

Subcommand modules are imported only when chosen, so ``catalogsync fetch`` does not pay for kopf
and ``catalogsync operator`` does not pay for asyncpg. Each module exposes ``main(argv) -> int``
and owns its own argument parser (and so its own ``--help``).

The development commands live in ``catalogsync.dev``, which only a source checkout has (the
wheel and the image ship the runtime alone): they are listed where they can run, and elsewhere the
help says how to get them.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
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
}
DEV_COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("catalogsync.dev.demo", "run a full sync locally on embedded servers"),
    "simulator": ("catalogsync.dev.simulator", "serve a simulated MediPim AU API"),
    "storage-server": ("catalogsync.dev.storage_server", "serve a local Supabase Storage API"),
    "kubelet": ("catalogsync.dev.kubelet", "play the kubelet for a local control plane"),
}
DEV_PACKAGE = "catalogsync.dev"
DEV_INSTALL = (
    "development commands ({names}) run from a source checkout: "
    "scripts/bootstrap.sh, or pip install -e '.[dev]'"
)


def version() -> str:
    """The installed distribution's version (the one pyproject.toml, the chart and image carry)."""
    try:
        return importlib.metadata.version("catalogsync")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def dev_available() -> bool:
    """Whether this installation has the development harness (a checkout, not the wheel)."""
    return importlib.util.find_spec(DEV_PACKAGE) is not None


def commands() -> dict[str, tuple[str, str]]:
    return {**COMMANDS, **DEV_COMMANDS} if dev_available() else dict(COMMANDS)


def parser() -> argparse.ArgumentParser:
    available = dev_available()
    root = argparse.ArgumentParser(
        prog="catalogsync",
        description="Keep a PostgreSQL products table in sync with MediPim's AU catalog.",
        epilog=None if available else DEV_INSTALL.format(names=", ".join(DEV_COMMANDS)) + ".",
    )
    root.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    subcommands = root.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, help_text) in commands().items():
        subcommands.add_parser(name, help=help_text, add_help=False)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    chosen = commands()
    if args and args[0] in DEV_COMMANDS and args[0] not in chosen:
        print(
            f"catalogsync: '{args[0]}' is not in this installation; "
            + DEV_INSTALL.format(names=", ".join(DEV_COMMANDS)),
            file=sys.stderr,
        )
        return 2
    if not args or args[0] not in chosen:
        parser().parse_args(args)  # prints usage, help or the version and exits
        return 2
    try:
        module = importlib.import_module(chosen[args[0]][0])
        result: int = module.main(args[1:])
    except KeyboardInterrupt:
        # Ctrl-C reaches a terminal's whole process group, the demo's jobs included: one line
        # and the shell's exit code for SIGINT, never a traceback.
        print(f"catalogsync {args[0]}: interrupted", file=sys.stderr)
        return 130
    return result


if __name__ == "__main__":
    sys.exit(main())
