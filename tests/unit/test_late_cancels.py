"""The started mark's late cancel check, between the loop's thread and the handler's
(worker.late_cancels): what a request cancelled after its early check ends as."""

from __future__ import annotations

import logging
import threading

import pytest
import redis

from redbatch.protocol.fields import CANCELLED, ERROR, EXPIRED, OK, Outcome, Request
from redbatch.transport.packed import Packed
from redbatch.worker.batch import Batch
from redbatch.worker.executor import Prepared, Ran
from redbatch.worker.late_cancels import LateCancels, cancel_late
from redbatch.worker.marks import StartArgs
from redbatch.worker.starting import Starter


def ran(request_id: str, status: str, retry: bool = False) -> Ran:
    request = Request("q", "1-0", request_id, b"")
    return Ran(request, Outcome(request_id, status, b"x"), 1, 2, 3, retry=retry)


def test_a_late_cancel_ends_a_request_that_ran_cancelled_and_leaves_the_rest() -> None:
    batch = [ran("a", OK), ran("b", ERROR, retry=True), ran("c", EXPIRED), ran("d", OK)]
    cancel_late(batch, frozenset({"a", "b", "c"}))
    assert [r.outcome.status for r in batch] == [CANCELLED, CANCELLED, EXPIRED, OK]
    assert batch[0].outcome.body == b"cancelled before it ran"
    assert not batch[1].retry  # a cancelled request is not retried
    assert batch[3].outcome.body == b"x"


def test_the_handler_thread_waits_for_the_answer_and_the_watch_sees_it() -> None:
    late = LateCancels()
    seen: set[str] = {"early"}
    late.watch(seen)
    got: list[frozenset[str]] = []
    waiter = threading.Thread(target=lambda: got.append(late.wait()))
    waiter.start()
    late.settle(frozenset({"x"}))
    waiter.join(5)
    assert got == [frozenset({"x"})] and seen == {"early", "x"}


def test_an_answer_before_the_watch_still_reaches_it() -> None:
    late = LateCancels()
    late.settle(frozenset({"x"}))
    seen: set[str] = set()
    late.watch(seen)
    assert seen == {"x"} and late.wait() == frozenset({"x"})


class _Marks:
    starts_unconfirmed = True

    def cancelled_now(self, queue: str, requests: list[Request]) -> frozenset[str]:
        return frozenset()

    def start_args(self, queue: str, requests: list[Request]) -> StartArgs:
        return StartArgs(requests, Packed(b"", 0))

    def start_unconfirmed(self, ahead: object, *, retry: bool = True) -> object:
        def lost() -> frozenset[str]:
            raise redis.ConnectionError("connection reset")

        return lost


class _Handler:
    late: LateCancels | None = None

    def relay(self, relay: object) -> None:
        pass  # never started by the handler thread: the loop launches it

    def take_back(self) -> None:
        pass

    def launch(self, executor: object, batch: object, cancelled: object, late=None) -> None:  # type: ignore[no-untyped-def]
        self.late = late


def test_a_lost_answer_to_an_unconfirmed_mark_lets_the_batch_run_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The mark was sent and the batch handed to the handler: a lost reply must not leave
    the handler thread waiting, nor raise into the loop (which would hold the running batch
    again); one warning line says it."""
    handler = _Handler()
    starter = Starter(_Marks(), handler, {"q": object()})  # type: ignore[arg-type,dict-item]
    request = Request("q", "1-0", "a", b"")
    batch = Batch("q", [], [], Prepared([request], {0: None}, {}))
    starter.follow(batch)
    assert batch.early == frozenset()
    assert not starter.relayed(batch)
    with caplog.at_level(logging.WARNING):
        assert starter.launch(batch) is batch
    assert handler.late is not None and handler.late.wait() == frozenset()
    [record] = [r for r in caplog.records if getattr(r, "event", "") == "start_check_lost"]
    assert "connection reset" in record.getMessage()
