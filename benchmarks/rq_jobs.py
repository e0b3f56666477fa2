"""The job the RQ baseline runs (benchmarks/rq_baseline.py): a no-op that returns its input.

RQ imports jobs by dotted path in the worker process, so it lives in a module of its own.
"""

from __future__ import annotations


def noop(payload: bytes) -> bytes:
    """Return the payload unchanged (the RQ counterpart of redbatch's echo handler)."""
    return payload
