"""Built-in handlers for tests, demos and benchmarks.

A handler takes the decoded payloads of one batch and returns one result per payload, in the
same order: ``handler(payloads: list) -> list``.
"""

from __future__ import annotations

import time
from typing import Any


def echo(payloads: list[Any]) -> list[Any]:
    """Return every payload unchanged."""
    return list(payloads)


def sleep(
    payloads: list[Any], seconds: float | str = 0.01, per_item: float | str = 0.0
) -> list[Any]:
    """Echo after sleeping ``seconds`` per batch plus ``per_item`` per payload (a model stand-in).

    Configure it with ``--handler-option seconds=0.05 --handler-option per_item=0.001``.
    """
    time.sleep(float(seconds) + float(per_item) * len(payloads))
    return list(payloads)
