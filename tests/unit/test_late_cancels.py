"""The started mark's late cancel check, between the loop's thread and the handler's
(worker.late_cancels): what a request cancelled after its early check ends as."""

from __future__ import annotations

import threading

from redbatch.protocol.fields import CANCELLED, ERROR, EXPIRED, OK, Outcome, Request
from redbatch.worker.executor import Ran
from redbatch.worker.late_cancels import LateCancels, cancel_late


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
