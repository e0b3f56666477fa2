"""The executor: handler isolation, contract errors, expiry, codec errors. No Redis."""

from __future__ import annotations

from typing import Any

import msgpack
from hypothesis import given
from hypothesis import strategies as st

from redbatch.protocol import codec
from redbatch.protocol.fields import DEAD, ERROR, EXPIRED, OK, Request
from redbatch.worker.executor import Executor

NOW = 1_700_000_000_000


def request(i: int, payload: Any, *, deadline: int = 0, ct: str = codec.MSGPACK) -> Request:
    return Request("q", f"1-{i}", f"r{i}", codec.encode(payload, ct), deadline=deadline, ct=ct)


def run(handler: Any, requests: list[Request]) -> list[Any]:
    return Executor(handler, clock_ms=lambda: NOW).run(requests)


def test_echo_results_in_order_with_batch_size() -> None:
    ran = run(lambda xs: [x * 2 for x in xs], [request(i, i) for i in range(5)])
    assert [msgpack.unpackb(r.outcome.body) for r in ran] == [0, 2, 4, 6, 8]
    assert {r.outcome.status for r in ran} == {OK}
    assert {r.batch for r in ran} == {5}


@given(st.lists(st.booleans(), min_size=1, max_size=64))
def test_only_poison_items_fail(poison_flags: list[bool]) -> None:
    calls: list[int] = []

    def handler(xs: list[Any]) -> list[Any]:
        calls.append(len(xs))
        if any(x == "poison" for x in xs):
            raise ValueError("poison payload")
        return xs

    payloads = ["poison" if bad else f"ok{i}" for i, bad in enumerate(poison_flags)]
    ran = run(handler, [request(i, p) for i, p in enumerate(payloads)])
    for r, bad in zip(ran, poison_flags, strict=True):
        if bad:
            assert r.outcome.status == ERROR
            assert r.outcome.error == "ValueError: poison payload"
        else:
            assert r.outcome.status == OK
    # Bisection never calls the handler with an empty batch.
    assert min(calls) >= 1


def test_wrong_length_fails_the_batch_with_a_message() -> None:
    ran = run(lambda xs: xs[:-1], [request(i, i) for i in range(4)])
    assert {r.outcome.status for r in ran} == {ERROR}
    assert "returned 3 results for 4 payloads" in ran[0].outcome.error
    assert ran[0].outcome.error.startswith("HandlerContractError: ")


def test_non_list_result_fails_the_batch() -> None:
    ran = run(lambda xs: None, [request(0, 1)])
    assert ran[0].outcome.status == ERROR
    assert "NoneType" in ran[0].outcome.error


def test_expired_items_never_reach_the_handler() -> None:
    seen: list[Any] = []

    def handler(xs: list[Any]) -> list[Any]:
        seen.extend(xs)
        return xs

    ran = run(handler, [request(0, "late", deadline=NOW - 1), request(1, "fine", deadline=NOW + 1)])
    assert [r.outcome.status for r in ran] == [EXPIRED, OK]
    assert seen == ["fine"]


def test_all_expired_does_not_call_handler() -> None:
    def handler(xs: list[Any]) -> list[Any]:
        raise AssertionError("must not be called")

    ran = run(handler, [request(0, "late", deadline=NOW)])
    assert ran[0].outcome.status == EXPIRED


def test_undecodable_payload_is_dead_and_neighbours_run() -> None:
    bad = Request("q", "1-0", "r0", b"{not json", ct=codec.JSON)
    ran = run(lambda xs: xs, [bad, request(1, {"a": 1}, ct=codec.JSON)])
    assert ran[0].outcome.status == DEAD
    assert ran[0].outcome.error.startswith("PayloadError: ")
    assert ran[1].outcome.status == OK
    assert ran[1].outcome.body == b'{"a":1}'


def test_unencodable_result_is_an_error_for_that_item_only() -> None:
    ran = run(lambda xs: [{1, 2} if x == 1 else x for x in xs], [request(0, 0), request(1, 1)])
    assert [r.outcome.status for r in ran] == [OK, ERROR]
    assert ran[1].outcome.error.startswith("PayloadError: result:")


def test_error_text_is_one_bounded_line() -> None:
    def handler(xs: list[Any]) -> list[Any]:
        raise RuntimeError("first line\nsecond line" + "x" * 5000)

    ran = run(handler, [request(0, 0)])
    assert ran[0].outcome.error == "RuntimeError: first line"
