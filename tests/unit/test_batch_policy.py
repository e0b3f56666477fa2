"""Property tests of the batch former (pure: no Redis, no sleeping, an injected clock)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from redbatch.batching import BatchPolicy, Decision, Held, decide
from redbatch.batching.policy import ordered
from redbatch.errors import ConfigError


@st.composite
def policies(draw: st.DrawFn) -> BatchPolicy:
    size = draw(st.integers(1, 64))
    preferred = draw(st.lists(st.integers(1, size), max_size=4, unique=True))
    return BatchPolicy(
        max_batch_size=size,
        max_batch_cost=draw(st.sampled_from([0, 1, 5, 16, 100])),
        max_wait_ms=draw(st.integers(0, 500)),
        preferred_batch_sizes=tuple(sorted(preferred)),
        priority_aging_ms=draw(st.sampled_from([0, 1, 100, 1000])),
    )


@st.composite
def workloads(draw: st.DrawFn) -> list[Held]:
    n = draw(st.integers(0, 80))
    items = []
    for i in range(n):
        arrived = draw(st.floats(0, 2, allow_nan=False))
        deadline = draw(st.one_of(st.none(), st.floats(0, 3, allow_nan=False)))
        items.append(
            Held(
                key=i,
                arrived=arrived,
                cost=draw(st.integers(1, 150)),
                deadline=deadline,
                priority=draw(st.sampled_from([0, 0, 0, 1, 2])),
            )
        )
    return items


def check_batch(decision: Decision, held: list[Held], policy: BatchPolicy, now: float) -> None:
    batch = list(decision.batch)
    assert decision.wait_s >= 0
    assert decision.wait_s <= policy.window_s + 1e-9
    if not batch:
        return
    assert len(batch) <= policy.max_batch_size
    total = sum(h.cost for h in batch)
    if policy.max_batch_cost and total > policy.max_batch_cost:
        assert len(batch) == 1  # only a single oversized item may break the budget
    # In order: the batch is a prefix of the live requests, highest priority first.
    live = ordered(
        [h for h in held if h.deadline is None or h.deadline > now], now, policy.priority_aging_ms
    )
    assert batch == live[: len(batch)]
    assert not any(h.deadline is not None and h.deadline <= now for h in batch)


@settings(max_examples=200, deadline=None)
@given(workloads(), policies(), st.floats(0, 3, allow_nan=False))
def test_every_decision_respects_the_limits(
    held: list[Held], policy: BatchPolicy, now: float
) -> None:
    decision = decide(held, policy, now)
    check_batch(decision, held, policy, now)
    expired = {h.key for h in decision.expired}
    assert expired == {h.key for h in held if h.deadline is not None and h.deadline <= now}


@settings(max_examples=100, deadline=None)
@given(workloads(), policies())
def test_every_held_request_is_eventually_batched_or_expired(
    held: list[Held], policy: BatchPolicy
) -> None:
    """Run the former as a worker would: take due batches, otherwise let the clock advance by
    the wait it returned. Nothing starves and the loop always terminates (seed 003)."""
    now = max((h.arrived for h in held), default=0.0)
    remaining = list(held)
    seen: list[Held] = []
    for _ in range(4 * len(held) + 10):
        if not remaining:
            break
        decision = decide(remaining, policy, now)
        check_batch(decision, remaining, policy, now)
        gone = {h.key for h in decision.batch} | {h.key for h in decision.expired}
        if not gone:
            # Waiting: the clock moves (a worker would read more meanwhile); never stuck at 0.
            now += max(decision.wait_s, 1e-6)
            continue
        seen += decision.batch
        remaining = [h for h in remaining if h.key not in gone]
    assert not remaining, "a held request was never batched nor expired"
    assert len({h.key for h in seen}) == len(seen)  # nobody ran twice


def test_oversized_request_runs_alone_at_once() -> None:
    policy = BatchPolicy(max_batch_size=8, max_batch_cost=10, max_wait_ms=1000)
    held = [Held("big", arrived=0, cost=50), Held("small", arrived=0.001, cost=1)]
    decision = decide(held, policy, now=0.002)
    assert [h.key for h in decision.batch] == ["big"]
    # And the one behind it is not blocked: next decision (window passed) takes it.
    rest = decide(held[1:], policy, now=2.0)
    assert [h.key for h in rest.batch] == ["small"]


def test_burst_equal_to_batch_size_runs_without_waiting() -> None:
    """Seed 000: a burst exactly the batch size must not wait for the window."""
    policy = BatchPolicy(max_batch_size=4, max_wait_ms=10_000)
    held = [Held(i, arrived=0.0) for i in range(4)]
    assert len(decide(held, policy, now=0.0).batch) == 4


def test_partial_batch_waits_for_the_window_then_runs() -> None:
    policy = BatchPolicy(max_batch_size=4, max_wait_ms=100)
    held = [Held(i, arrived=1.0) for i in range(3)]
    waiting = decide(held, policy, now=1.04)
    assert waiting.batch == ()
    assert waiting.wait_s == pytest.approx(0.06)
    assert len(decide(held, policy, now=1.1).batch) == 3


def test_preferred_size_runs_before_the_window() -> None:
    policy = BatchPolicy(max_batch_size=32, max_wait_ms=100, preferred_batch_sizes=(8, 16))
    assert len(decide([Held(i, arrived=0) for i in range(8)], policy, now=0).batch) == 8
    assert decide([Held(i, arrived=0) for i in range(9)], policy, now=0).batch == ()


def test_budget_reached_exactly_is_full() -> None:
    policy = BatchPolicy(max_batch_size=32, max_batch_cost=10, max_wait_ms=1000)
    held = [Held(i, arrived=0, cost=5) for i in range(2)]
    assert len(decide(held, policy, now=0).batch) == 2


def test_priority_first_without_reordering_within_one() -> None:
    policy = BatchPolicy(max_batch_size=2, max_wait_ms=0, priority_aging_ms=0)
    held = [Held("low1", 0.0), Held("high", 0.5, priority=1), Held("low2", 0.1)]
    assert [h.key for h in decide(held, policy, now=1).batch] == ["high", "low1"]


def test_a_waiting_request_ages_past_fresh_higher_priorities() -> None:
    policy = BatchPolicy(max_batch_size=1, max_wait_ms=0, priority_aging_ms=100)
    held = [Held("low", 0.0, priority=0), Held("high", 0.25, priority=2)]
    # At 0.15 s the low request has gained one level: the high one still goes first.
    assert [h.key for h in decide(held, policy, now=0.15).batch] == ["high"]
    # At 0.25 s it has gained two: equal to the high one, and it is older.
    assert [h.key for h in decide(held, policy, now=0.25).batch] == ["low"]


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 8), st.integers(1, 40), st.integers(0, 5), st.integers(1, 3))
def test_low_priority_is_not_starved_by_a_flood_of_high(
    size: int, aging_ms: int, wait_ms: int, per_step: int
) -> None:
    """High requests keep arriving faster than batches free slots, for ever: the low one
    still runs, and no high request that arrived two aging steps (its lead) after it ran
    before it."""
    policy = BatchPolicy(max_batch_size=size, max_wait_ms=wait_ms, priority_aging_ms=aging_ms)
    step, lead = 0.001, 2 * aging_ms / 1000
    held = [Held("low", 0.0, priority=0)]
    ran_before: list[Held] = []
    now, n = 0.0, 0
    for _ in range(10_000):
        for _ in range(per_step):
            held.append(Held(n, now, priority=2))
            n += 1
        decision = decide(held, policy, now)
        if any(h.key == "low" for h in decision.batch):
            late = [h for h in ran_before if h.arrived >= lead + 1e-9]
            assert not late, f"{len(late)} high requests that came {lead} s later went first"
            return
        ran_before += decision.batch
        gone = {h.key for h in decision.batch}
        held = [h for h in held if h.key not in gone]
        now += step
    raise AssertionError(f"the low-priority request still waits after {now:.3f} s")


def test_expired_requests_are_dropped_before_they_cost_a_slot() -> None:
    policy = BatchPolicy(max_batch_size=1, max_wait_ms=0)
    held = [Held("late", 0.0, deadline=0.5), Held("fine", 0.1)]
    decision = decide(held, policy, now=1.0)
    assert [h.key for h in decision.expired] == ["late"]
    assert [h.key for h in decision.batch] == ["fine"]


def test_room_reads_at_most_one_batch_ahead() -> None:
    policy = BatchPolicy(max_batch_size=8)
    assert policy.room(0) == 16
    assert policy.room(12) == 4
    assert policy.room(40) == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_batch_size": 0},
        {"max_batch_cost": -1},
        {"max_wait_ms": -1},
        {"max_batch_size": 4, "preferred_batch_sizes": (8,)},
        {"priority_aging_ms": -1},
    ],
)
def test_bad_knobs_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        BatchPolicy(**kwargs)  # type: ignore[arg-type]


@given(
    st.lists(st.floats(0, 10, allow_nan=False), max_size=30),
    st.integers(0, 2),
    st.floats(0, 20, allow_nan=False),
    st.sampled_from([0, 1, 250, 1000]),
)
def test_one_priority_is_ordered_by_arrival_as_the_aged_order_would(
    arrivals: list[float], priority: int, now: float, aging_ms: int
) -> None:
    """The one-priority shortcut of ``ordered`` gives what the (aged) priority key gives."""
    held = [Held(key=i, arrived=a, priority=priority) for i, a in enumerate(arrivals)]
    step = aging_ms / 1000.0

    def aged(h: Held) -> int:
        return h.priority + (max(0, int((now - h.arrived) // step)) if aging_ms else 0)

    expected = sorted(held, key=lambda h: (-aged(h), h.arrived))
    assert [h.key for h in ordered(held, now, aging_ms)] == [h.key for h in expected]
