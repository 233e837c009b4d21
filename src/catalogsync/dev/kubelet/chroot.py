"""Start one container process inside an image's root filesystem (stdlib only, run as a script).

The process kubelet runs ``unshare --mount --propagation private -- python -I chroot.py SPEC``:
in that private mount namespace this script lays a fresh overlay over the image's unpacked root
(so mount points can be made and nothing reaches the image), mounts ``/proc``, a minimal ``/dev``,
the termination-message file and the pod's volumes, makes the root read-only when the pod says so,
then chroots, drops to the pod's uid/gid/groups with ``no_new_privs`` and execs the container's
program. The namespace and its mounts end with the process; the network is the host's (loopback
servers stay reachable).

SPEC is a JSON file written by :mod:`catalogsync.dev.kubelet.sandbox`; the process environment is
the container's, except that ``termination_env`` names a host file, rewritten to the container's
``terminationMessagePath``.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
START_ERROR = 128
_PR_SET_PDEATHSIG = 1
_PR_SET_NO_NEW_PRIVS = 38


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, stdin=subprocess.DEVNULL)


def inside(root: Path, path: str, *, hops: int = 40) -> Path:
    """``path`` of the container on the host, following the image's symlinks within ``root``.

    (``/var/run`` is a symlink to ``/run`` in Debian: joined naively it would name the host's.)
    """
    current = root
    parts = [p for p in path.split("/") if p and p != "."]
    while parts:
        part = parts.pop(0)
        if part == "..":
            current = current.parent if current != root else root
            continue
        candidate = current / part
        if candidate.is_symlink():
            if hops == 0:
                raise OSError(f"too many symbolic links in {path}")
            hops -= 1
            target = os.readlink(candidate)
            if target.startswith("/"):
                current = root
            parts = [p for p in target.split("/") if p and p != "."] + parts
            continue
        current = candidate
    return current


def mount_point(target: Path, *, file: bool) -> None:
    if file:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.touch(exist_ok=True)
    else:
        target.mkdir(parents=True, exist_ok=True)


def bind(source: str, target: Path, *, read_only: bool) -> None:
    mount_point(target, file=not os.path.isdir(source))
    mount("--bind", source, str(target))
    if read_only:
        mount("-o", "remount,bind,ro", str(target))


def prepare_root(spec: dict[str, Any]) -> Path:
    """The container's root: overlay, /proc, /dev, termination file, volumes; read-only last."""
    state = Path(spec["state"])
    root, upper, work = state / "root", state / "upper", state / "work"
    for directory in (upper, work):  # a restarted container starts from the image again
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
    root.mkdir(parents=True, exist_ok=True)
    mount(
        "-t",
        "overlay",
        "overlay",
        "-o",
        f"lowerdir={spec['rootfs']},upperdir={upper},workdir={work}",
        str(root),
    )
    mount_point(root / "proc", file=False)
    mount("-t", "proc", "-o", "nosuid,nodev,noexec", "proc", str(root / "proc"))
    dev = root / "dev"
    mount_point(dev, file=False)
    mount("-t", "tmpfs", "-o", "nosuid,mode=755,size=1m", "tmpfs", str(dev))
    for name in DEVICES:
        bind(f"/dev/{name}", dev / name, read_only=False)
    (dev / "shm").mkdir()
    mount("-t", "tmpfs", "-o", "nosuid,nodev,mode=1777,size=64m", "tmpfs", str(dev / "shm"))
    for name, target in (
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ):
        (dev / name).symlink_to(target)
    if spec.get("termination"):
        host = os.environ.get(spec["termination_env"], "")
        if host:
            os.chown(host, spec["uid"], spec["gid"])  # as runtimes make it: the container writes it
            bind(host, inside(root, spec["termination"]), read_only=False)
            os.environ[spec["termination_env"]] = spec["termination"]
    for volume in spec["mounts"]:
        bind(volume["source"], inside(root, volume["target"]), read_only=volume["readOnly"])
    inside(root, spec["workdir"]).mkdir(parents=True, exist_ok=True)
    if spec["readOnlyRoot"]:
        mount("-o", "remount,ro", str(root))
    return root


def drop_privileges(spec: dict[str, Any]) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    os.setgroups(spec["groups"])
    os.setgid(spec["gid"])
    os.setuid(spec["uid"])
    if spec["noNewPrivileges"]:
        libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    # Changing credentials cleared the kubelet's parent-death signal: set it again.
    libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[1]).read_text())
    program = spec["argv"][0]
    try:
        root = prepare_root(spec)
        os.chroot(root)
        os.chdir(spec["workdir"])
        drop_privileges(spec)
        if "/" not in program:
            program = shutil.which(program, path=os.environ.get("PATH", os.defpath)) or program
        os.execve(program, spec["argv"], os.environ)
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"container start failed: exec {spec['argv'][0]}: {exc}", file=sys.stderr)
    return START_ERROR


if __name__ == "__main__":
    sys.exit(main(sys.argv))
