"""A handler module that takes long to import, like one that loads a model."""

from __future__ import annotations

import sys
import time
from typing import Any

print("slow_import: loading", file=sys.stderr, flush=True)
time.sleep(3)


def echo(payloads: list[Any]) -> list[Any]:
    return list(payloads)
