"""Handlers that worker processes started by tests import as ``helpers.handlers:NAME``."""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

from redbatch import Retry


def poison(payloads: list[Any]) -> list[Any]:
    """Echo, but the whole batch raises if any payload is the string "poison"."""
    if "poison" in payloads:
        raise ValueError("poison payload")
    return list(payloads)


def wrong_length(payloads: list[Any]) -> list[Any]:
    """Breaks the handler contract: one result too few."""
    return list(payloads)[:-1]


def pid(payloads: list[Any]) -> list[Any]:
    """Answers each payload with the worker's pid, to see which process ran it."""
    return [os.getpid()] * len(payloads)


def batch_size(payloads: list[Any]) -> list[Any]:
    """Answers each payload with the size of the batch it ran in."""
    return [len(payloads)] * len(payloads)


def unencodable(payloads: list[Any]) -> list[Any]:
    """Returns results msgpack cannot carry (a set), to test result-encoding errors."""
    return [{1, 2} for _ in payloads]


def broken_import_time() -> None:  # pragma: no cover - only referenced by name
    raise RuntimeError("never called")


def kill_on_poison(payloads: list[Any]) -> list[Any]:
    """Echo, but the process dies (SIGKILL, like a segfaulting CUDA kernel) on "kill-me"."""
    if "kill-me" in payloads:
        os.kill(os.getpid(), signal.SIGKILL)
    return list(payloads)


def hang_on(payloads: list[Any]) -> list[Any]:
    """Echo, but a batch holding "hang" never returns (a hung GPU kernel)."""
    if "hang" in payloads:
        time.sleep(3600)
    return list(payloads)


def retry_always(payloads: list[Any]) -> list[Any]:
    """Asks for every batch to be retried shortly."""
    raise Retry("model warming up", delay=0.05)


def slow_echo(payloads: list[Any]) -> list[Any]:
    """Echo after 0.2 s per batch: long enough to stop a worker mid-batch."""
    time.sleep(0.2)
    return list(payloads)


def connection_error_once(payloads: list[Any], marker: str = "") -> list[Any]:
    """Echo, but the first batch ever run raises ConnectionError (a flaky model server).

    ``marker`` (``--handler-option marker=PATH``) is a file created on that first failure:
    its presence says the failure already happened, across attempts and processes."""
    if not marker:
        raise ValueError("connection_error_once needs --handler-option marker=PATH")
    try:
        with open(marker, "x", encoding="utf-8") as f:
            f.write(str(os.getpid()))
    except FileExistsError:
        return list(payloads)
    raise ConnectionError("model server unreachable (first attempt)")


def tag(payloads: list[Any], label: str = "tagged") -> list[Any]:
    """Answers each payload with ``[label, payload]``: shows which handler (and options) ran."""
    return [[label, p] for p in payloads]


def retry_while_file(payloads: list[Any], marker: str = "") -> list[Any]:
    """Asks for a retry while the file ``marker`` exists, echoes once it is gone: with
    ``--max-attempts 1`` a request dies while the marker is there and runs fine after."""
    if not marker:
        raise ValueError("retry_while_file needs --handler-option marker=PATH")
    if os.path.exists(marker):
        raise Retry("marker file present", delay=0.05)
    return list(payloads)


def block_until_file(
    payloads: list[Any], release: str = "", limit_s: float | str = 60
) -> list[Any]:
    """Echo once the file ``release`` exists (at most ``limit_s`` later): holds a batch
    mid-run for as long as a test needs, with no fixed sleep in the test."""
    if not release:
        raise ValueError("block_until_file needs --handler-option release=PATH")
    deadline = time.monotonic() + float(limit_s)
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.01)
    return list(payloads)


def cuda_devices(payloads: list[Any]) -> list[Any]:
    """Answers each payload with this process's CUDA_VISIBLE_DEVICES (a pool's --gpus)."""
    return [os.environ.get("CUDA_VISIBLE_DEVICES", "") for _ in payloads]


def record_echo(payloads: list[Any], log: str = "") -> list[Any]:
    """Echo, and append each payload (one JSON line) to the file ``log``: what the handler
    saw, for tests that check a request never reached it."""
    if not log:
        raise ValueError("record_echo needs --handler-option log=PATH")
    with open(log, "a", encoding="utf-8") as f:
        f.writelines(json.dumps(p) + "\n" for p in payloads)
    return list(payloads)


def record_and_hold(payloads: list[Any], log: str = "", release: str = "") -> list[Any]:
    """``record_echo``, then a batch holding "hold" waits for the file ``release``: batch N
    kept running while a test acts on N+1."""
    record_echo(payloads, log)
    if "hold" in payloads:
        block_until_file(payloads, release)
    return list(payloads)
