"""What ``redbatch worker QUEUE... --check`` and ``redbatch scheduler --check`` look at: for
exec probes and the Dockerfile HEALTHCHECK, like ``arq --check``, without scanning Redis.

A worker writes a small file naming itself (namespace, the physical queues it beats for) in
this host's runtime directory while it serves; ``--check`` reads those files and asks Redis
whether one of their heartbeats exists (one EXISTS per queue: no SCAN, whatever the
namespace holds). A scheduler touches its file after every pass that reached Redis;
``--check`` wants a touch within the scheduler's liveness bound and a Redis that answers.
Files of processes that are gone are removed by the next check.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

WORKER, SCHEDULER = "worker", "scheduler"


def directory() -> Path:
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return Path(base) / f"redbatch-{os.getuid()}"


@dataclass(frozen=True)
class Entry:
    kind: str
    name: str
    namespace: str
    queues: tuple[str, ...]
    pid: int
    age_s: float  # since the file was last written


def _path(kind: str, name: str) -> Path:
    return directory() / f"{kind}-{name}.json"


def write(kind: str, name: str, namespace: str, queues: Iterable[str] = ()) -> None:
    """Create or refresh this process's file (atomically: a reader never sees half)."""
    path = _path(kind, name)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    data = {"namespace": namespace, "queues": list(queues), "pid": os.getpid()}
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(json.dumps(data))
    temporary.replace(path)


def remove(kind: str, name: str) -> None:
    with contextlib.suppress(OSError):
        _path(kind, name).unlink()


def read(kind: str, namespace: str) -> list[Entry]:
    """Files of live processes of ``kind`` in ``namespace``; those of dead ones are removed."""
    entries = []
    now = time.time()
    for path in sorted(directory().glob(f"{kind}-*.json")):
        try:
            data = json.loads(path.read_text())
            age = now - path.stat().st_mtime
            pid = int(data["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # being replaced, or not ours
        if not _alive(pid):
            remove(kind, path.stem.removeprefix(f"{kind}-"))
            continue
        if data.get("namespace") == namespace:
            name = path.stem.removeprefix(f"{kind}-")
            entries.append(Entry(kind, name, namespace, tuple(data.get("queues", ())), pid, age))
    return entries


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
