"""Where the development tools keep what is slow to make, shared by every clone of the project.

``$CATALOGSYNC_CACHE``, else ``$XDG_CACHE_HOME/catalogsync``, else ``~/.cache/catalogsync``: the
same rule as ``scripts/lib/cache.sh``, so the Python side finds what the build scripts cached.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    if configured := os.environ.get("CATALOGSYNC_CACHE"):
        return Path(configured)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "catalogsync"
