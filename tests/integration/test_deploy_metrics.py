"""Every metric the shipped dashboards, alert rules, recording rules and ScaledObjects name
exists in a live scrape of a real worker and a real scheduler: a renamed metric cannot leave
a dashboard blank or an alert silent."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from helpers.metrics import free_port, scrape, try_scrape, value
from helpers.workers import WorkerProcess, wait_serving, wait_until
from redbatch import Producer

pytestmark = pytest.mark.integration
Factory = Callable[..., WorkerProcess]
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
WAIT_S = 30.0
METRIC = re.compile(r"\bredbatch_[a-z0-9_]+")
RECORD = re.compile(r"\bredbatch:[a-z0-9_:]+")


def expressions() -> dict[str, list[str]]:
    """file -> the PromQL expressions in it."""
    found: dict[str, list[str]] = {}
    dashboard = json.loads((DEPLOY / "grafana/redbatch-dashboard.json").read_text())
    found["grafana"] = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    for name in ("recording-rules.yaml", "alerts.yaml"):
        rules = yaml.safe_load((DEPLOY / "prometheus" / name).read_text())
        found[name] = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    for doc in yaml.safe_load_all((DEPLOY / "kubernetes/keda-scaledobject.yaml").read_text()):
        found["keda"] = [t["metadata"]["query"] for t in doc["spec"]["triggers"]]
    return found


def test_every_metric_named_in_deploy_exists_in_a_live_scrape(
    redis_url: str, namespace: str, queue: str, worker_factory: Factory,
    scheduler_factory: Factory,
) -> None:  # fmt: skip
    worker_port, scheduler_port = free_port(), free_port()
    wait_serving(
        worker_factory([queue], "redbatch.handlers:echo", "--metrics-port", str(worker_port))
    )
    scheduler_factory("--metrics-port", str(scheduler_port))
    with Producer.from_url(redis_url, namespace=namespace) as producer:
        assert producer.call(queue, "x", timeout=WAIT_S) == "x"
    # The scheduler's queue gauges appear with its first pass over the queue.
    wait_until(
        lambda: (s := try_scrape(scheduler_port))
        and ("redbatch_queue_backlog", (("queue", queue),)) in s,
        WAIT_S, "the scheduler's gauges",
    )  # fmt: skip
    samples = {name for name, _ in scrape(worker_port)} | {
        name for name, _ in scrape(scheduler_port)
    }
    assert value(scrape(worker_port), "redbatch_requests_total", queue=queue, outcome="ok") == 1

    found = expressions()
    rules = yaml.safe_load((DEPLOY / "prometheus/recording-rules.yaml").read_text())
    recorded = {r["record"] for g in rules["groups"] for r in g["rules"]}
    named: dict[str, set[str]] = {}
    for where, exprs in found.items():
        assert exprs, where
        for expr in exprs:
            for metric in METRIC.findall(expr):
                named.setdefault(metric, set()).add(where)
            assert set(RECORD.findall(expr)) <= recorded, (where, expr)
    missing = {m: sorted(w) for m, w in named.items() if m not in samples}
    assert not missing, f"named in deploy/ but not exported: {missing}"
    # The autoscaling signal and the gauges are among them.
    for metric in ("redbatch_queue_backlog", "redbatch_queue_oldest_waiting_seconds",
                   "redbatch_build_info", "redbatch_items_in_flight",
                   "redbatch_worker_busy_ratio", "redbatch_dead_letters"):  # fmt: skip
        assert metric in named, metric
