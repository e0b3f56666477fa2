"""A batch relayed to the handler thread (worker.handler_thread.Relay): started by that
thread itself when the running batch ends, its mark sent first; or left to the loop."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import fakeredis
import msgpack
import pytest
import redis

from redbatch.protocol.fields import Request
from redbatch.protocol.keys import KeySpace
from redbatch.worker.batch import Batch
from redbatch.worker.executor import Executor
from redbatch.worker.handler_thread import HandlerThread, Relay
from redbatch.worker.heartbeat import Progress
from redbatch.worker.late_cancels import LateCancels

WAIT_S = 10.0


class Setup:
    def __init__(self) -> None:
        self.stopping = threading.Event()
        self.release = threading.Event()
        self.events: list[str] = []
        self.thread = HandlerThread(
            fakeredis.FakeRedis(), KeySpace("t"), Progress(), result_ttl_s=60,
            stopping=self.stopping,
        )  # fmt: skip
        self.executor = Executor(self._handle)

    def _handle(self, payloads: list[Any]) -> list[Any]:
        if "hold" in payloads:
            assert self.release.wait(WAIT_S)
        self.events.append(f"ran {payloads[0]}")
        return payloads

    def batch(self, payload: str) -> Batch:
        request = Request("q", "1-0", payload, msgpack.packb(payload))
        return Batch("q", [], [], self.executor.prepare([request]))

    def relay(self, batch: Batch, send: Callable[[], Any]) -> Relay:
        relay = Relay(self.executor, batch, frozenset(), LateCancels(), send)
        self.thread.relay(relay)
        return relay

    def sent_from_handler_thread(self) -> Callable[[], frozenset[str]]:
        self.events.append(f"mark sent on {threading.current_thread().name.split('_')[0]}")
        return frozenset


@pytest.fixture
def setup() -> Iterator[Setup]:
    s = Setup()
    yield s
    s.release.set()
    s.thread.close()


def test_the_handler_thread_sends_the_mark_then_runs_the_batch_when_the_one_before_ends(
    setup: Setup,
) -> None:
    running, following = setup.batch("hold"), setup.batch("next")
    setup.thread.launch(setup.executor, running, frozenset())
    relay = setup.relay(following, setup.sent_from_handler_thread)
    setup.release.set()
    assert running.finished(WAIT_S)
    # Started before the running batch's future was done: the loop sees it at once.
    assert relay.answer is not None and following.future is not None
    relay.late.settle(relay.answer())
    assert following.finished(WAIT_S)
    assert [r.outcome.body for r in following.future.result()] == [msgpack.packb("next")]
    assert setup.events == ["ran hold", "mark sent on redbatch-handler", "ran next"]


def test_a_mark_that_cannot_be_sent_leaves_the_batch_to_the_loop(setup: Setup) -> None:
    running, following = setup.batch("hold"), setup.batch("next")
    setup.thread.launch(setup.executor, running, frozenset())

    def lost() -> Callable[[], frozenset[str]]:
        raise redis.ConnectionError("connection reset")

    relay = setup.relay(following, lost)
    setup.release.set()
    assert running.finished(WAIT_S)
    assert relay.answer is None and following.future is None
    assert setup.events == ["ran hold"]


@pytest.mark.parametrize("why", ["a stop", "taken back by the loop"])
def test_a_stop_or_a_take_back_keeps_the_batch_from_starting(setup: Setup, why: str) -> None:
    running, following = setup.batch("hold"), setup.batch("next")
    setup.thread.launch(setup.executor, running, frozenset())
    relay = setup.relay(following, setup.sent_from_handler_thread)
    if why == "a stop":
        setup.stopping.set()
    else:
        setup.thread.take_back()
    setup.release.set()
    assert running.finished(WAIT_S)
    assert relay.answer is None and following.future is None
    assert setup.events == ["ran hold"]  # no mark sent, nothing else ran
