"""The handler's forms: def or async def, with or without ``requests``. No Redis."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest

from redbatch import RequestInfo
from redbatch.protocol import codec
from redbatch.protocol.fields import CANCELLED, ERROR, OK, Request
from redbatch.worker.calling import HandlerCall, HandlerLoop, takes_requests
from redbatch.worker.executor import Executor
from redbatch.worker.loader import warm_up
from redbatch.worker.request_info import request_info

NOW = 1_700_000_000_000


@pytest.fixture
def loop() -> Iterator[HandlerLoop]:
    handler_loop = HandlerLoop()
    yield handler_loop
    handler_loop.close()


def request(i: int, payload: Any, **fields: Any) -> Request:
    return Request("q#2", f"1-{i}", f"r{i}", codec.encode(payload), **fields)


def run(handler: Any, requests: list[Request], loop: HandlerLoop, **kw: Any) -> list[Any]:
    return Executor(handler, clock_ms=lambda: NOW, loop=loop).run(requests, **kw)


def results(ran: list[Any]) -> list[Any]:
    return [msgpack.unpackb(r.outcome.body) for r in ran]


def test_which_handlers_take_requests() -> None:
    def plain(payloads: list[Any]) -> list[Any]:
        return payloads

    def with_requests(payloads: list[Any], requests: list[RequestInfo]) -> list[Any]:
        return payloads

    def positional_only(payloads: list[Any], requests: list[RequestInfo], /) -> list[Any]:
        return payloads

    def with_option(payloads: list[Any], requests: Any, scale: str = "1") -> list[Any]:
        return payloads

    def catch_all(payloads: list[Any], **requests: Any) -> list[Any]:
        return payloads

    assert takes_requests(plain) is None
    assert takes_requests(catch_all) is None
    assert takes_requests(with_requests) is True
    assert takes_requests(positional_only) is False
    assert takes_requests(functools.partial(with_option, scale="2")) is True


def test_async_handler_results_in_order(loop: HandlerLoop) -> None:
    async def handler(payloads: list[Any]) -> list[Any]:
        await asyncio.sleep(0)
        return [p * 10 for p in payloads]

    ran = run(handler, [request(i, i) for i in range(4)], loop)
    assert {r.outcome.status for r in ran} == {OK}
    assert results(ran) == [0, 10, 20, 30]


def test_async_handlers_share_one_loop_across_batches(loop: HandlerLoop) -> None:
    seen: list[asyncio.AbstractEventLoop] = []

    async def handler(payloads: list[Any]) -> list[Any]:
        seen.append(asyncio.get_running_loop())
        return payloads

    # Two executors (two queues) of one worker share its loop too.
    a = Executor(handler, clock_ms=lambda: NOW, loop=loop)
    b = Executor(handler, clock_ms=lambda: NOW, loop=loop)
    for executor in (a, b, a):
        executor.run([request(0, 0)])
    assert len(seen) == 3
    assert len({id(x) for x in seen}) == 1


def test_a_raising_async_handler_is_bisected(loop: HandlerLoop) -> None:
    async def handler(payloads: list[Any]) -> list[Any]:
        if "poison" in payloads:
            raise ValueError("poison payload")
        return payloads

    ran = run(handler, [request(0, "a"), request(1, "poison"), request(2, "b")], loop)
    assert [r.outcome.status for r in ran] == [OK, ERROR, OK]
    assert ran[1].outcome.error == "ValueError: poison payload"


def test_requests_carry_each_items_fields_in_batch_order(loop: HandlerLoop) -> None:
    got: list[list[RequestInfo]] = []

    def handler(payloads: list[Any], requests: list[RequestInfo]) -> list[Any]:
        got.append(requests)
        return [r.id for r in requests]

    batch = [
        request(0, "a", attempt=2, cost=7, enq=NOW - 50, deadline=NOW + 1000, priority="high"),
        request(1, "b"),
    ]
    ran = run(handler, batch, loop)
    assert results(ran) == ["r0", "r1"]
    first, second = got[0]
    assert first == RequestInfo("r0", "q", 2, 7, "high", NOW - 50, NOW + 1000)
    assert second.deadline_ms is None
    assert (second.attempt, second.cost, second.enqueued_ms) == (1, 1, 0)
    assert not first.cancelled()


def test_requests_follow_the_payloads_through_bisection(loop: HandlerLoop) -> None:
    def handler(payloads: list[Any], requests: list[RequestInfo]) -> list[Any]:
        if "poison" in payloads:
            raise ValueError("poison")
        return [f"{p}:{r.id}" for p, r in zip(payloads, requests, strict=True)]

    payloads = ["a", "b", "poison", "c", "d"]
    ran = run(handler, [request(i, p) for i, p in enumerate(payloads)], loop)
    assert [r.outcome.status for r in ran] == [OK, OK, ERROR, OK, OK]
    assert [msgpack.unpackb(r.outcome.body) for r in ran if r.outcome.status == OK] == [
        "a:r0", "b:r1", "c:r3", "d:r4",
    ]  # fmt: skip


def test_an_async_handler_takes_requests_too(loop: HandlerLoop) -> None:
    async def handler(payloads: list[Any], requests: list[RequestInfo]) -> list[Any]:
        return [r.attempt for r in requests]

    assert results(run(handler, [request(0, 0, attempt=3)], loop)) == [3]


def test_cancelled_reads_the_workers_live_record() -> None:
    cancelled: set[str] = set()
    info = request_info(request(0, 0), cancelled)
    assert not info.cancelled()
    cancelled.add("r0")  # the worker learns of the cancellation while the handler runs
    assert info.cancelled()


def test_cancelled_items_never_reach_the_handler(loop: HandlerLoop) -> None:
    def handler(payloads: list[Any], requests: list[RequestInfo]) -> list[Any]:
        assert [r.id for r in requests] == ["r1"]
        return payloads

    ran = run(handler, [request(0, 0), request(1, 1)], loop, cancelled=frozenset({"r0"}))
    assert [r.outcome.status for r in ran] == [CANCELLED, OK]


def test_request_info_is_read_only() -> None:
    info = request_info(request(0, 0))
    with pytest.raises(AttributeError):
        info.id = "other"  # type: ignore[misc]


def test_a_callable_returning_an_awaitable_is_awaited(loop: HandlerLoop) -> None:
    class Model:
        """Not a coroutine function, but its calls return one."""

        async def infer(self, payloads: list[Any]) -> list[Any]:
            return [p.upper() for p in payloads]

        def __call__(self, payloads: list[Any]) -> Any:
            return self.infer(payloads)

    assert HandlerCall(Model(), loop)(["x"], []) == ["X"]


def test_async_warm_up_runs_on_the_handlers_loop(loop: HandlerLoop) -> None:
    state: dict[str, Any] = {}

    async def handler(payloads: list[Any], size: str = "0") -> list[Any]:
        assert state["loop"] is asyncio.get_running_loop()
        return payloads

    async def ready(size: str = "0") -> None:
        state["loop"] = asyncio.get_running_loop()
        state["size"] = size

    handler.warm_up = ready  # type: ignore[attr-defined]
    warm_up(functools.partial(handler, size="3"), loop)
    assert state["size"] == "3"
    ran = run(functools.partial(handler, size="3"), [request(0, 0)], loop)
    assert ran[0].outcome.status == OK


def test_the_loop_is_closed_on_the_thread_that_ran_it(loop: HandlerLoop) -> None:
    async def where() -> int:
        return threading.get_ident()

    ran_on = loop.run(where())
    loop.close()
    assert ran_on == threading.get_ident()
    assert loop.run(where()) == ran_on  # a closed HandlerLoop makes a new loop on demand
