"""A streaming (generator) handler stepped by the executor, with a recording ``publish``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import msgpack

from redbatch import Final
from redbatch.protocol.chunks import StepChunk
from redbatch.protocol.fields import CANCELLED, ERROR, OK, Request
from redbatch.worker.calling import HandlerLoop
from redbatch.worker.executor import Executor


def requests(n: int, *, stream: bool = True) -> list[Request]:
    return [
        Request("q", f"1-{i}", f"r{i}", msgpack.packb(i), reply="p1", stream=stream)
        for i in range(n)
    ]


class Recorder:
    """Keeps every step's call; cancels the ids in ``cancel_at[step]`` at that step."""

    def __init__(self, cancel_at: dict[int, set[str]] | None = None) -> None:
        self.calls: list[tuple[list[str], list[StepChunk]]] = []
        self.cancel_at = cancel_at or {}

    def __call__(self, running: list[str], chunks: list[StepChunk]) -> set[str]:
        self.calls.append((running, chunks))
        return self.cancel_at.get(len(self.calls), set()) & set(running)

    def flush(self) -> set[str]:
        return set()


def value(body: bytes) -> Any:
    return msgpack.unpackb(body)


def test_chunks_go_out_per_step_numbered_and_final_ends_an_item() -> None:
    def gen(payloads: list[Any]) -> Iterator[list[Any]]:
        yield ["a0", "b0"]
        yield [Final("A"), None]
        yield ["ignored", "b1"]

    publish = Recorder()
    ran = Executor(gen).run(requests(2), publish=publish)
    assert [(r.outcome.status, value(r.outcome.body)) for r in ran] == [
        (OK, "A"),
        (OK, ["b0", "b1"]),  # no Final: the list of its chunks
    ]
    sent = [
        [(c.request_id, c.chunk.seq, "end" if c.chunk.end else value(c.chunk.body)) for c in cs]
        for _, cs in publish.calls
    ]
    # Final sends r0's end mark at once (seq: the number of its chunks).
    assert sent == [[("r0", 0, "a0"), ("r1", 0, "b0")], [("r0", 1, "end")], [("r1", 1, "b1")]]
    # Every step checks the cancel keys of the requests still running (and of those whose
    # end mark it carries: after them).
    assert [running for running, _ in publish.calls] == [["r0", "r1"], ["r1", "r0"], ["r1"]]
    assert [c.position for c in publish.calls[1][1]] == [1]


def test_a_cancelled_item_stops_and_its_batchmates_go_on() -> None:
    seen: list[list[Any]] = []

    def gen(payloads: list[Any]) -> Iterator[list[Any]]:
        for k in range(4):
            step = [f"{p}:{k}" for p in payloads]
            seen.append(step)
            yield step

    publish = Recorder(cancel_at={2: {"r0"}})
    ran = Executor(gen).run(requests(2), publish=publish)
    assert ran[0].outcome.status == CANCELLED
    assert ran[1].outcome.status == OK
    assert value(ran[1].outcome.body) == ["1:0", "1:1", "1:2", "1:3"]
    r0_chunks = [c.chunk.seq for _, cs in publish.calls for c in cs if c.request_id == "r0"]
    assert r0_chunks == [0, 1]


def test_the_generator_is_closed_once_every_item_ended() -> None:
    closed = []

    def gen(payloads: list[Any]) -> Iterator[list[Any]]:
        try:
            yield [Final(1)] * len(payloads)
            yield ["never"] * len(payloads)
        finally:
            closed.append(True)

    publish = Recorder()
    ran = Executor(gen).run(requests(3), publish=publish)
    assert [value(r.outcome.body) for r in ran] == [1, 1, 1]
    assert closed == [True]
    assert len(publish.calls) == 1  # the three end marks, then nothing more


def test_async_generator_handlers_share_one_loop_across_batches() -> None:
    loops = []

    async def gen(payloads: list[Any]) -> AsyncIterator[list[Any]]:
        import asyncio  # noqa: PLC0415

        loops.append(asyncio.get_running_loop())
        yield ["x"] * len(payloads)

    loop = HandlerLoop()
    executor = Executor(gen, loop=loop)
    try:
        for _ in range(2):
            ran = executor.run(requests(2), publish=Recorder())
            assert [value(r.outcome.body) for r in ran] == [["x"], ["x"]]
    finally:
        loop.close()
    assert loops[0] is loops[1]


def test_a_request_without_streaming_interest_sends_no_chunks() -> None:
    def gen(payloads: list[Any]) -> Iterator[list[Any]]:
        yield ["c"] * len(payloads)

    publish = Recorder()
    ran = Executor(gen).run(requests(2, stream=False), publish=publish)
    assert [value(r.outcome.body) for r in ran] == [["c"], ["c"]]
    assert publish.calls == [(["r0", "r1"], [])]  # the cancel check still runs


def test_a_raising_or_misaligned_generator_fails_the_items_still_running() -> None:
    def raising(payloads: list[Any]) -> Iterator[list[Any]]:
        yield [Final("done"), "c"]
        raise RuntimeError("boom")

    ran = Executor(raising).run(requests(2), publish=Recorder())
    assert ran[0].outcome.status == OK
    assert (ran[1].outcome.status, ran[1].outcome.error) == (ERROR, "RuntimeError: boom")

    def short(payloads: list[Any]) -> Iterator[list[Any]]:
        yield ["only one"]

    ran = Executor(short).run(requests(2), publish=Recorder())
    assert {r.outcome.status for r in ran} == {ERROR}
    assert (
        "HandlerContractError: a streaming handler's step had 1 values for 2"
        in ran[0].outcome.error
    )


def test_the_handler_sees_a_cancel_through_its_request_infos_from_the_next_step() -> None:
    seen: list[list[bool]] = []

    def gen(payloads: list[Any], requests: list[Any]) -> Iterator[list[Any]]:
        for k in range(3):
            seen.append([r.cancelled() for r in requests])
            yield [None if r.cancelled() else k for r in requests]

    ran = Executor(gen).run(requests(2), publish=Recorder(cancel_at={1: {"r1"}}))
    assert seen == [[False, False], [False, True], [False, True]]
    assert [r.outcome.status for r in ran] == [OK, CANCELLED]
    assert ran[1].outcome.error == "cancelled while it ran"


def test_a_cancel_whose_answer_comes_after_the_item_ended_still_ends_it_cancelled() -> None:
    class Late(Recorder):
        def flush(self) -> set[str]:
            return {"r0"}  # the last step's check saw the cancel; its answer came at the end

    def gen(payloads: list[Any]) -> Iterator[list[Any]]:
        yield ["a", "b"]
        yield [Final("A"), Final("B")]

    ran = Executor(gen).run(requests(2), publish=Late())
    assert [r.outcome.status for r in ran] == [CANCELLED, OK]
