"""The producer's plans and flows, with no Redis: what a flow sends, how replies and errors
reach it, and the pure choices (per-item cost, require_worker's cache)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import redis
import redis.asyncio

from redbatch import AsyncProducer, Producer
from redbatch.errors import ConfigError, ConnectionFailed, NoWorker
from redbatch.producer import plans
from redbatch.producer._core import ProducerCore
from redbatch.producer.admission import Admissions
from redbatch.producer.engine import Engine
from redbatch.producer.handle import BaseHandle
from redbatch.producer.listener import Listening
from redbatch.producer.options import url_options
from redbatch.producer.plans import Flow, Plan, Steps
from redbatch.producer.requests import submissions
from redbatch.transport.topology import ONE_NODE


def drive(flow: Flow[Any], replies: list[Any]) -> tuple[Any, list[Plan[Any]]]:
    """Run ``flow`` answering its plans in turn from ``replies`` (each a plan's raw replies,
    one per command, given to its parser; an exception: raised)."""
    sent: list[Plan[Any]] = []
    steps = Steps(flow)
    answers = iter(replies)
    for plan in steps:
        sent.append(plan)
        answer = next(answers)
        if isinstance(answer, BaseException):
            steps.error = answer
        else:
            steps.settle(lambda: plan.parse(answer))  # noqa: B023
    return steps.value, sent


def test_steps_send_replies_and_throw_errors_into_the_flow() -> None:
    def flow() -> Flow[str]:
        [first] = yield Plan("a", [("GET", "k")])
        try:
            yield Plan("b", [("GET", "k2")])
        except ConnectionFailed:
            return f"{first} then handled"
        return "not reached"

    value, sent = drive(flow(), [["one"], ConnectionFailed("down")])
    assert value == "one then handled"
    assert [p.what for p in sent] == ["a", "b"]


def test_an_error_the_flow_does_not_handle_propagates() -> None:
    def flow() -> Flow[None]:
        yield Plan("a", [("GET", "k")])

    with pytest.raises(ConnectionFailed):
        drive(flow(), [ConnectionFailed("down")])


def test_cost_per_item() -> None:
    core = ProducerCore()
    subs = submissions(core, "q", ["a", "bbb"], None, "normal", len)
    assert [s.fields.get("cost", 1) for s in subs] == [1, 3]
    subs = submissions(core, "q", ["a", "b"], None, "normal", [2, 5])
    assert [s.fields.get("cost", 1) for s in subs] == [2, 5]
    with pytest.raises(ConfigError, match="2 values for 3 payloads"):
        submissions(core, "q", ["a", "b", "c"], None, "normal", [1, 2])
    with pytest.raises(ConfigError, match="cost"):
        submissions(core, "q", ["a"], None, "normal", [0])


def test_default_timeout_and_its_checks() -> None:
    assert ProducerCore().timeout(None) == 30.0
    assert ProducerCore(default_timeout=None).timeout(None) is None
    assert ProducerCore().timeout(2.5) == 2.5
    with pytest.raises(ConfigError):
        ProducerCore(default_timeout=0)
    with pytest.raises(ConfigError):
        ProducerCore(require_worker="yes")  # type: ignore[arg-type]


def test_url_options_split() -> None:
    rest, pool = url_options({"cluster": False, "max_connections": 8, "namespace": "x"})
    assert rest == {"namespace": "x"}
    assert pool == {"cluster": False, "max_connections": 8}


@pytest.mark.parametrize("name", ["max_connections", "cluster"])
def test_pool_keywords_with_a_given_client_name_from_url(name: str) -> None:
    """A producer given its client cannot size that client's pool: one clear line, not
    ProducerCore's TypeError, for Producer and AsyncProducer alike."""
    with pytest.raises(ConfigError, match=f"{name}= is for from_url"):
        Producer(redis.Redis(), **{name: 8})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=f"{name}= is for from_url"):
        AsyncProducer(redis.asyncio.Redis(), **{name: 8})  # type: ignore[arg-type]


def engine() -> Engine[BaseHandle]:
    core = ProducerCore()
    listening = Listening(core, threading.Condition(), {}, ONE_NODE)
    return Engine(core, listening, lambda subs, once: [])


def test_require_worker_asks_redis_once_per_freshness_window() -> None:
    producer = engine()
    shards = [[None]]  # HMGET of the queue's config: no shards field
    consumers = [[{"name": b"w1"}]]
    heartbeat = [1]
    _, sent = drive(producer.require_worker("q"), [shards, consumers, heartbeat])
    assert len(sent) == 3
    _, sent = drive(producer.require_worker("q"), [])
    assert sent == []  # cached


def test_require_worker_raises_no_worker_after_looking_everywhere() -> None:
    producer = engine()
    no_consumers: list[Any] = [[]]
    scan_done = [[0, []]]
    with pytest.raises(NoWorker, match="'q'"):
        drive(producer.require_worker("q"), [[[None]], no_consumers, scan_done])
    with pytest.raises(NoWorker):  # the answer is cached too: no plan sent
        drive(producer.require_worker("q"), [])


def test_admission_plan_parses_a_refusal() -> None:
    core = ProducerCore(max_queue_len=5)
    sub = core.submission("q", "x")
    plan = plans.admission(core, [sub], False, core_admission(core))
    assert plan.parse([[1, sub.request_id]]) is None
    full = plan.parse([[0, 5]])
    assert full is not None and full.length == 5


def core_admission(core: ProducerCore) -> Any:
    return Admissions(core.producer_id).open()
