"""``map``'s wait: the results of its handles in input order, under one deadline."""

from __future__ import annotations

import asyncio
from typing import Any

from redbatch.errors import ResultTimeout
from redbatch.producer.base_handle import GoneFn
from redbatch.producer.handle import AsyncHandle, Handle
from redbatch.producer.requests import Gathered


def gather(handles: list[Handle], gathered: Gathered, gone: GoneFn) -> list[Any]:
    """``map``'s results of ``handles``, which share one latch (one wait for all)."""
    if handles and not handles[0]._latch.wait_all(gathered.remaining()):
        waiting = [h for h in handles if not h.done()]
        if waiting:
            gone(waiting, cancelled=False)
            raise ResultTimeout(waiting[0].id, gathered.timeout or 0.0)
    for handle in handles:
        try:
            gathered.results.append(handle._value())
        except Exception as exc:
            gathered.failed(exc)
    return gathered.finish()


async def gather_async(handles: list[AsyncHandle], gathered: Gathered, gone: GoneFn) -> list[Any]:
    """``map``'s results of ``handles``; a timed-out or cancelled wait tells ``gone`` of the
    requests still waiting."""
    for handle in handles:
        try:
            outcome = await handle._wait(gathered.remaining())
        except ResultTimeout:
            gone([h for h in handles if not h.done()], cancelled=False)
            raise ResultTimeout(handle.id, gathered.timeout or 0.0) from None
        except asyncio.CancelledError:
            gone([h for h in handles if not h.done()], cancelled=True)
            raise
        try:
            gathered.results.append(handle._core.value(outcome, handle._ct))
        except Exception as exc:
            gathered.failed(exc)
    return gathered.finish()
