"""CancelWatch: the cancels found while a batch runs reach the set RequestInfo reads."""

from __future__ import annotations

import threading
from collections.abc import Iterable

from redbatch.protocol.keys import KeySpace, QueueKeys
from redbatch.worker.cancel_watch import CancelWatch

KEYS = KeySpace("rb").queue("q")


class Seen(set[str]):
    """The set RequestInfo.cancelled() reads; tells when the watch added to it."""

    def __init__(self) -> None:
        super().__init__()
        self.updated = threading.Event()

    def update(self, *others: Iterable[str]) -> None:
        super().update(*others)
        self.updated.set()


def test_a_cancel_found_while_the_batch_runs_reaches_its_set() -> None:
    asked: list[list[str]] = []

    def check(_keys: QueueKeys, ids: list[str]) -> set[str]:
        asked.append(ids)
        return {"b"}

    watch = CancelWatch(check, interval_s=0.01)
    seen = Seen()
    watch.watch(KEYS, ["a", "b"], seen)
    try:
        assert seen.updated.wait(5), "no cancel check while the batch ran"
    finally:
        watch.done()
        watch.close()
    assert asked[0] == ["a", "b"]
    assert seen == {"b"}


def test_a_batch_that_ends_before_the_interval_costs_no_check() -> None:
    calls: list[list[str]] = []

    def check(_keys: QueueKeys, ids: list[str]) -> set[str]:
        calls.append(ids)
        return set()

    watch = CancelWatch(check, interval_s=60)
    watch.watch(KEYS, ["a"], set())
    watch.done()
    watch.close()
    assert calls == []
