"""redbatch.stop_signals: a stop signal never waits for a lock the interrupted thread holds.

Each case runs in a child process: it installs signal handlers, and a regression would hang
it (the child is killed at the timeout and the test fails instead of hanging the suite).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

from helpers import subprocess_env

TIMEOUT_S = 20.0

PRELUDE = """
import os, signal, sys, threading
from redbatch.stop_signals import on_stop_signals

stop = threading.Event()

def quit_now():
    os._exit(7)

on_stop_signals(stop.set, quit_now)
"""


def run_child(body: str) -> subprocess.CompletedProcess[str]:
    script = PRELUDE + textwrap.dedent(body)
    return subprocess.run(
        [sys.executable, "-c", script],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


def test_a_signal_while_the_main_thread_holds_the_stop_events_lock_still_stops() -> None:
    # Where ``status --watch`` hung on Ctrl-C: the main thread inside ``stop.wait`` holds the
    # event's lock when the handler runs. raise_signal runs the handler before it returns,
    # so here it runs with the lock held: a handler calling ``stop.set()`` never returns.
    child = run_child(
        """
        with stop._cond:
            signal.raise_signal(signal.SIGINT)
            print("handler returned", flush=True)
        sys.exit(0 if stop.wait(10) else 1)
        """
    )
    assert (child.returncode, child.stdout) == (0, "handler returned\n"), child.stderr


def test_the_first_signal_stops_and_the_second_quits_at_once() -> None:
    child = run_child(
        """
        signal.raise_signal(signal.SIGTERM)
        assert stop.wait(10), "the first signal did not stop"
        print("stopped", flush=True)
        signal.raise_signal(signal.SIGINT)
        print("not reached", flush=True)
        """
    )
    assert (child.returncode, child.stdout) == (7, "stopped\n"), child.stderr
