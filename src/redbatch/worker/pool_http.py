"""The pool parent's HTTP endpoint (``--metrics-port P``; child i serves on P+1+i): probes
that reflect the children and one /metrics with every child's series, labelled ``worker``.

Live unless a child's own /healthz answers 503 (a child that is down is being restarted by
the pool, which is alive; the restart budget ends the pool when that goes on). Ready when
every child's /readyz answers 200.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from redbatch import exporter
from redbatch.worker.pool import Child, Pool

# A probe (and a scrape) must answer within Kubernetes' timeoutSeconds (1 s by default for
# probes, 5 s in deploy/): each child gets this long.
_CHILD_TIMEOUT_S = 0.8


def _get(port: int, path: str) -> tuple[int, str]:
    """(status, body) from a child; (0, why) when it does not answer."""
    try:
        url = f"http://127.0.0.1:{port}{path}"
        with urllib.request.urlopen(url, timeout=_CHILD_TIMEOUT_S) as resp:
            return resp.status, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as exc:
        return 0, str(getattr(exc, "reason", exc))


class PoolHealth:
    """``exporter.Health`` of a pool: its children's probes."""

    def __init__(self, children: Sequence[Child]) -> None:
        self._children = children

    def live(self) -> str:
        for child in self._children:
            status, body = _get(child.port, exporter.HEALTHZ)
            if status == 503:
                return f"worker {child.name}: {body.strip()}"
        return ""

    def ready(self) -> str:
        for child in self._children:
            status, body = _get(child.port, exporter.READYZ)
            if status != 200:
                return f"worker {child.name}: {body.strip() or 'not answering'}"
        return ""


class ChildMetrics(Collector):
    """Every child's series, scraped when the pool is, with a ``worker`` label added."""

    def __init__(self, children: Sequence[Child]) -> None:
        self._children = children

    def collect(self) -> Iterable[Metric]:
        merged: dict[str, Metric] = {}
        for child in self._children:
            status, text = _get(child.port, exporter.METRICS)
            if status != 200:
                continue  # restarting: its series are back at the next scrape
            for family in text_string_to_metric_families(text):
                if family.name == "redbatch_build":
                    continue  # the pool's own says it once
                into = merged.setdefault(
                    family.name, Metric(family.name, family.documentation, family.type)
                )
                for s in family.samples:
                    into.add_sample(s.name, {**s.labels, "worker": child.name}, s.value)
        return list(merged.values())


def registry(children: Sequence[Child]) -> tuple[CollectorRegistry, Counter]:
    """The pool's registry: its children's series, its build, its restarts counter."""
    r = CollectorRegistry()
    r.register(ChildMetrics(children))
    exporter.build_info(r)
    restarts = Counter(
        "redbatch_pool_restarts", "Children the pool restarted", ["worker"], registry=r
    )
    for child in children:
        restarts.labels(child.name)
    return r, restarts


def run(pool: Pool, metrics_port: int) -> int:
    """Run ``pool``, with its endpoint on ``metrics_port`` (0: none); its exit code."""
    if not metrics_port:
        return pool.run()
    r, restarts = registry(pool.children)
    pool.on_restart = lambda child: restarts.labels(child.name).inc()
    endpoint = exporter.serve(metrics_port, r, PoolHealth(pool.children))
    try:
        return pool.run()
    finally:
        endpoint.close()
