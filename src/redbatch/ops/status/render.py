"""``redbatch status`` on a terminal: a table of queues and a table of workers (rich)."""

from __future__ import annotations

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from redbatch.ops.status.model import BUSY, DEAD, GONE, IDLE, QueueStatus, Snapshot, WorkerStatus

_NONE = "-"
_STATE_STYLES = {BUSY: "green", IDLE: "cyan", DEAD: "bold red", GONE: "dim", "draining": "yellow"}


def age(ms: int | None) -> str:
    """A duration, compact for a table cell: ``830ms``, ``4.2s``, ``3m05s``, ``2h10m``."""
    if ms is None:
        return _NONE
    if ms < 1000:
        return f"{ms}ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f}s"
    seconds = ms // 1000
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"


def latency(ms: float | None) -> str:
    """A percentile in ms (a bucket's upper edge, ~12 % resolution: no false digits)."""
    if ms is None:
        return _NONE
    return f"{ms:.1f}" if ms < 10 else f"{ms:,.0f}"


def rate(per_s: float) -> str:
    return f"{per_s:,.1f}" if per_s < 100 else f"{per_s:,.0f}"


def _count(n: int | None) -> str:
    return _NONE if n is None else f"{n:,}"


def _pair(p50: float | None, p99: float | None) -> str:
    if p50 is None and p99 is None:
        return _NONE
    return f"{latency(p50)}/{latency(p99)}"


def _queue_row(q: QueueStatus) -> list[str]:
    w = q.window
    return [
        q.name,
        _count(q.waiting),
        _count(q.in_flight),
        _count(q.delayed),
        _count(q.dead),
        f"{q.consumers_alive}/{q.consumers_dead}",
        age(q.oldest_waiting_age_ms),
        _count(q.lag),
        rate(w.items_per_s),
        _pair(w.wait_p50_ms, w.wait_p99_ms),
        _pair(w.service_p50_ms, w.service_p99_ms),
    ]


def _table(title: str, caption: str | None = None) -> Table:
    # Light borders, one blank between columns: both tables fit 80 columns with typical names.
    return Table(
        title=title,
        caption=caption,
        box=box.SIMPLE_HEAD,
        padding=0,  # the box's blank column divider is the only gap
        show_edge=False,
        title_justify="left",
        caption_justify="left",
    )


# Headers broken by hand: rich would otherwise squeeze the numbers of narrow columns.
_QUEUE_COLUMNS = (
    "waiting", "in\nflight", "delayed", "dead", "alive/\ndead", "oldest", "lag", "items/s",
    "wait ms\np50/p99", "svc ms\np50/p99",
)  # fmt: skip


def queues_table(snapshot: Snapshot) -> Table:
    table = _table(
        f"queues on {snapshot.redis} (namespace {snapshot.namespace})",
        "alive/dead: consumers; oldest: age of the oldest waiting request; items/s, "
        "queue wait and service (handler) time: the last minute",
    )
    table.add_column("queue", no_wrap=True)
    for name in _QUEUE_COLUMNS:
        table.add_column(name, justify="right", no_wrap=True)
    for q in snapshot.queues:
        table.add_row(*_queue_row(q))
    return table


def _worker_row(w: WorkerStatus) -> list[RenderableType]:
    return [
        w.name,
        Text(w.state, style=_STATE_STYLES.get(w.state, "")),
        w.host or _NONE,
        _NONE if w.pid is None else str(w.pid),
        " ".join(w.queues),
        _count(w.in_flight),
        _count(w.batches),
        _count(w.items),
        age(w.last_batch_age_ms),
    ]


def workers_table(snapshot: Snapshot) -> Table:
    table = _table("workers")
    table.add_column("worker", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("host")
    table.add_column("pid", justify="right", no_wrap=True)
    table.add_column("queues")
    for name in ("in\nflight", "batches", "items", "last\nbatch"):
        table.add_column(name, justify="right", no_wrap=True)
    for w in snapshot.workers:
        table.add_row(*_worker_row(w))
    return table


def render(snapshot: Snapshot) -> RenderableType:
    """The queues table and the workers table, or one line saying there is nothing."""
    if not snapshot.queues and not snapshot.workers:
        return Text(
            f"no queues in namespace {snapshot.namespace} on {snapshot.redis}: "
            "nothing has been submitted or served here yet"
        )
    totals = snapshot.totals
    parts: list[RenderableType] = []
    if not totals.complete:
        parts += [
            Text(
                f"{totals.queues:,} queues hold {totals.length:,} requests, "
                f"{totals.delayed:,} delayed, {totals.dead:,} dead; showing the "
                f"{totals.shown:,} served or holding most (--all: every queue)"
            ),
            Text(""),
        ]
    return Group(
        *parts,
        queues_table(snapshot) if snapshot.queues else Text("no queues"),
        Text(""),
        workers_table(snapshot) if snapshot.workers else Text("no workers"),
    )
