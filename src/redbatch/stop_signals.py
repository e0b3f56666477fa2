"""SIGTERM and SIGINT for the long-running commands: the first stops, a second quits at once.

The first signal's ``stop`` runs on a thread of its own, never in the signal handler.
Python runs a handler in the main thread between two bytecodes, wherever that thread is,
including inside ``threading.Event.wait`` while it holds the event's own lock: a handler
that calls ``event.set()`` there waits for a lock its thread holds, and the process hangs
on the first Ctrl-C (``redbatch status --watch`` did, waiting between two frames). The
handler only puts the signal on a ``queue.SimpleQueue``, whose ``put`` is reentrant (safe in
a signal handler), and the relay thread calls ``stop``. The second signal's ``quit`` runs
in the handler: it must exit without taking a lock (``os._exit``).
"""

from __future__ import annotations

import queue
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import NoReturn

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def on_stop_signals(stop: Callable[[], None], quit_now: Callable[[], NoReturn]) -> None:
    """First SIGTERM/SIGINT: ``stop()``, on the relay thread. A second: ``quit_now()``."""
    arrived: queue.SimpleQueue[int] = queue.SimpleQueue()
    seen: list[int] = []

    def handle(signum: int, frame: FrameType | None) -> None:
        if seen:
            quit_now()
        seen.append(signum)
        arrived.put(signum)

    def relay() -> None:
        arrived.get()
        stop()

    threading.Thread(target=relay, name="redbatch-stop-signal", daemon=True).start()
    for signum in STOP_SIGNALS:
        signal.signal(signum, handle)
