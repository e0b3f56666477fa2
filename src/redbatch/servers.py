"""Which server a private :class:`~redbatch.embedded.EmbeddedRedis` runs: the system's
``redis-server`` (Debian bookworm: Redis 7.0), or Redis 8.0 / Valkey 8.1 from Debian trixie.

The trixie servers come from a root filesystem that ``debootstrap`` builds on first use
(~1 min, ~230 MB) in a cache outside the repository (``/var/cache/redbatch-servers``, or
``$REDBATCH_SERVER_CACHE``) and that every later run reuses; a file lock makes a second
concurrent run wait for the first one's build instead of building it again.

The binaries run on the host through the root filesystem's own dynamic loader and
libraries (``ld-linux --library-path ... redis-server``), not under ``chroot``: so the paths
a test hands the server (its directory, TLS certificates, ACL and cluster files) are the
host's, and nothing has to be copied or bind-mounted into the root filesystem.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from redbatch.errors import RedbatchError

__all__ = ["SERVERS", "SYSTEM", "ServerBuild", "server_build"]

SYSTEM = "redis7"
# name -> (package binary in the trixie root filesystem, what it is); SYSTEM is the host's.
_TRIXIE_BINARIES = {"redis8": "redis-server", "valkey8": "valkey-server"}
SERVERS = (SYSTEM, *_TRIXIE_BINARIES)

CACHE_ENV = "REDBATCH_SERVER_CACHE"
DEFAULT_CACHE = Path("/var/cache/redbatch-servers")
_SUITE = "trixie"
_PACKAGES = "redis-server,valkey-server"
_MIRROR = "http://deb.debian.org/debian"
_BUILD_TIMEOUT_S = 900


@dataclass(frozen=True)
class ServerBuild:
    """A server to start: ``command`` is the argv that runs its ``redis-server`` (arguments
    follow), ``cli`` the matching ``redis-cli``."""

    name: str
    command: tuple[str, ...]
    cli: tuple[str, ...]


def server_build(name: str, cache: Path | None = None) -> ServerBuild:
    """The server called ``name`` (one of :data:`SERVERS`), building its root filesystem
    first when it is not cached yet."""
    if name == SYSTEM:
        server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if server is None or cli is None:
            raise RedbatchError("redis-server is not on PATH (apt-get install redis-server)")
        return ServerBuild(name, (server,), (cli,))
    binary = _TRIXIE_BINARIES.get(name)
    if binary is None:
        raise RedbatchError(f"unknown server {name!r}: choose one of {', '.join(SERVERS)}")
    root = trixie_root(cache)
    cli = binary.replace("-server", "-cli")
    return ServerBuild(name, _loaded(root, binary), _loaded(root, cli))


def _loaded(root: Path, binary: str) -> tuple[str, ...]:
    """Run ``binary`` of ``root`` with root's loader and libraries (no chroot)."""
    loaders = sorted(root.glob("lib*/ld-linux*.so.*")) + sorted(root.glob("usr/lib*/ld-linux*"))
    libs = [str(p) for p in (*root.glob("usr/lib/*-linux-gnu"), *root.glob("lib/*-linux-gnu"))]
    if not loaders:
        raise RedbatchError(f"no dynamic loader in {root}: remove it to rebuild")
    # argv[0] stays the program's path, which redis uses to tell server from check-rdb.
    return (str(loaders[0]), "--library-path", ":".join(libs), str(root / "usr/bin" / binary))


def trixie_root(cache: Path | None = None) -> Path:
    """The cached trixie root filesystem, built under a lock when missing."""
    cache = cache or Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)
    root = cache / _SUITE
    if (root / "usr/bin/valkey-server").exists():
        return root
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / f"{_SUITE}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a concurrent run builds: wait for it, then reuse
        if not (root / "usr/bin/valkey-server").exists():
            _build(root)
    return root


def _build(root: Path) -> None:
    if shutil.which("debootstrap") is None:
        raise RedbatchError(
            "debootstrap is needed to build Redis 8 / Valkey 8 (apt-get install debootstrap)"
        )
    partial = root.with_name(root.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)  # a build killed half-way
    command = ["debootstrap", "--variant=minbase", f"--include={_PACKAGES}", _SUITE]
    try:
        subprocess.run(
            [*command, str(partial), _MIRROR],
            check=True,
            capture_output=True,
            timeout=_BUILD_TIMEOUT_S,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        output = (exc.stdout or b"") + (exc.stderr or b"")
        tail = output.decode(errors="replace").strip().splitlines()[-5:]
        raise RedbatchError(f"{' '.join(command)} failed:\n" + "\n".join(tail)) from exc
    partial.rename(root)  # readers see a complete root filesystem or none
