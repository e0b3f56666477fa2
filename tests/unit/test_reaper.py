"""The reaper's pure decisions: dead vs hung vs fine, which entries go, which consumers go."""

from __future__ import annotations

import pytest

from redbatch.protocol.scripts import RequeueItem
from redbatch.scheduler.reaper import (
    DEFAULT_BATCH_TIMEOUT_S,
    Action,
    HeartbeatSeen,
    PendingEntry,
    held,
    judge,
    parse_heartbeat,
    removable,
    select,
)
from redbatch.scheduler.service import Duty, due_duties, wait_time

PAGE = [PendingEntry("1-0", 500), PendingEntry("2-0", 31_000), PendingEntry("3-0", 90_000)]


# -- heartbeat ---------------------------------------------------------------------------------


def test_missing_heartbeat_is_none() -> None:
    assert parse_heartbeat(False, None) is None
    assert parse_heartbeat(False, b"10") is None


def test_heartbeat_carries_its_batch_timeout() -> None:
    assert parse_heartbeat(True, b"12") == HeartbeatSeen(12)


@pytest.mark.parametrize("raw", [None, b"", b"abc", b"-5", b"0", b"1.5"])
def test_unreadable_batch_timeout_falls_back_to_the_default(raw: bytes | None) -> None:
    assert parse_heartbeat(True, raw) == HeartbeatSeen(DEFAULT_BATCH_TIMEOUT_S)


# -- judging a consumer ------------------------------------------------------------------------


def test_consumer_holding_nothing_is_left_alone() -> None:
    assert judge("w1", 0, None, hung_margin_s=30).action is Action.NOTHING
    assert judge("w1", 0, HeartbeatSeen(1), hung_margin_s=0).action is Action.NOTHING


def test_consumer_without_heartbeat_is_dead_and_loses_everything() -> None:
    verdict = judge("w1", 3, None, hung_margin_s=30)
    assert verdict.action is Action.REQUEUE_ALL
    assert "w1" in verdict.reason
    assert "died" in verdict.reason
    # however fresh: a dead worker will never finish them
    assert select(verdict, PAGE) == ["1-0", "2-0", "3-0"]


def test_live_consumer_loses_only_entries_past_batch_timeout_plus_margin() -> None:
    verdict = judge("w2", 3, HeartbeatSeen(1), hung_margin_s=30)
    assert verdict.action is Action.REQUEUE_HUNG
    assert verdict.min_idle_ms == 31_000
    assert "batch_timeout" in verdict.reason
    assert "w2" in verdict.reason
    # exactly at the limit is not past it
    assert select(verdict, PAGE) == ["3-0"]


def test_live_consumer_within_its_batch_timeout_keeps_everything() -> None:
    verdict = judge("w3", 3, HeartbeatSeen(300), hung_margin_s=0)
    assert select(verdict, PAGE) == []


def test_zero_margin_uses_batch_timeout_alone() -> None:
    verdict = judge("w4", 1, HeartbeatSeen(1), hung_margin_s=0)
    assert verdict.min_idle_ms == 1000
    assert select(verdict, [PendingEntry("1-0", 1000), PendingEntry("2-0", 1001)]) == ["2-0"]


def test_nothing_selects_nothing() -> None:
    assert select(judge("w", 0, None, hung_margin_s=0), PAGE) == []


# -- consumer clean-up -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pending", "heartbeat", "idle_ms", "expected"),
    [
        (0, False, 10_000, True),
        (1, False, 10_000, False),  # holds something: the reaper deals with it first
        (0, True, 10_000, False),  # a live worker, just idle
        (0, False, 100, False),  # just created: its heartbeat may be on its way
        (0, False, 3000, False),  # exactly the limit is not past it
    ],
)
def test_removable(pending: int, heartbeat: bool, idle_ms: int, expected: bool) -> None:
    assert removable(pending, heartbeat, idle_ms, min_idle_ms=3000) is expected


# -- what requeue.lua is told about an entry ---------------------------------------------------


def test_held_entry_names_its_request_and_reply() -> None:
    fields = {b"id": b"r1", b"reply": b"p1", b"payload": b"x"}
    assert held("1-0", fields) == RequeueItem("1-0", "r1", "p1")


def test_held_entry_without_reply() -> None:
    assert held("1-0", {b"id": b"r1", b"payload": b"x"}) == RequeueItem("1-0", "r1", "")


def test_vanished_entry_is_still_passed_without_keys() -> None:
    assert held("1-0", None) == RequeueItem("1-0")


@pytest.mark.parametrize("bad_id", [b"", b"has space", b"{tag}", "é".encode(), b"x" * 129])
def test_entry_with_invalid_id_gets_no_result_key(bad_id: bytes) -> None:
    assert held("1-0", {b"id": bad_id, b"reply": b"p1"}) == RequeueItem("1-0")


def test_entry_with_invalid_reply_keeps_its_result_but_no_reply_key() -> None:
    assert held("1-0", {b"id": b"r1", b"reply": b"a b"}) == RequeueItem("1-0", "r1", "")


# -- the loop's timing -------------------------------------------------------------------------


def _noop(_keys: object) -> None:
    return None


def test_due_duties_and_wait_time() -> None:
    duties = [Duty("a", _noop, 1.0), Duty("b", _noop, 5.0)]
    assert [d.name for d in due_duties(duties, {"a": 0.0, "b": 0.0}, 0.0)] == ["a", "b"]
    next_run = {"a": 11.0, "b": 15.0}
    assert due_duties(duties, next_run, 10.0) == []
    assert wait_time(next_run, 10.0) == pytest.approx(1.0)
    assert [d.name for d in due_duties(duties, next_run, 11.0)] == ["a"]
    assert wait_time(next_run, 20.0) == 0.0
