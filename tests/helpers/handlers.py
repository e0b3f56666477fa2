"""Handlers that worker processes started by tests import as ``helpers.handlers:NAME``."""

from __future__ import annotations

import os
from typing import Any


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
