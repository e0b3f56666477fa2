"""``redbatch status``: the pure rules (states, the statistics window, JSON, rendering) and
the option checks that run before Redis is touched."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner
from rich.console import Console

from helpers import subprocess_env
from redbatch.cli import main
from redbatch.ops.status.model import (
    Lane,
    QueueStatus,
    Snapshot,
    Window,
    WorkerStatus,
    age_ms,
    covered_s,
    entry_ms,
    to_json,
    window,
    worker_state,
)
from redbatch.ops.status.render import age, latency, render
from redbatch.protocol import stats


@pytest.mark.parametrize(
    ("heartbeat_state", "busy", "in_flight", "expected"),
    [
        ("serving", "1", 0, "busy"),
        ("serving", "0", 5, "busy"),  # holds entries: a batch forming, or busy is stale
        ("serving", "0", 0, "idle"),
        ("serving", None, 3, "busy"),  # a worker without the busy field
        ("serving", None, 0, "idle"),
        ("draining", "1", 2, "draining"),
        ("starting", None, 0, "starting"),
        (None, None, 2, "dead"),
        (None, None, 0, "gone"),
    ],
)
def test_worker_state(
    heartbeat_state: str | None, busy: str | None, in_flight: int, expected: str
) -> None:
    assert worker_state(heartbeat_state, busy, in_flight) == expected


def test_entry_ids_and_ages() -> None:
    assert entry_ms(b"1700000000123-7") == 1_700_000_000_123
    assert entry_ms("12-0") == 12
    assert entry_ms(b"garbage") is None
    assert age_ms(1000, 400) == 600
    assert age_ms(1000, 1500) == 0  # a host whose clock runs ahead: never a negative age
    assert age_ms(1000, 0) is None  # a heartbeat's last_batch before any batch
    assert age_ms(1000, None) is None


@pytest.mark.parametrize(("offset", "covered"), [(0.0, 50.0), (4.5, 54.5), (9.999, 59.999)])
def test_the_window_covers_the_current_slot_up_to_now(offset: float, covered: float) -> None:
    start = 170_000_000 * stats.SLOT_S  # the start of a slot
    assert covered_s(start + offset) == pytest.approx(covered)


def test_window_percentiles_and_rate() -> None:
    counts = stats.Counts()
    counts.add_batch([1.0] * 99 + [500.0], 20.0, ["ok"] * 99 + ["error"])
    now = 170_000_000 * stats.SLOT_S + 5
    w = window(counts, now)
    assert (w.items, w.batches, w.outcomes) == (100, 1, {"error": 1, "ok": 99})
    assert w.items_per_s == pytest.approx(100 / 55)
    assert w.wait_p50_ms == stats.upper_ms(stats.bucket(1.0))
    assert w.wait_p99_ms == stats.upper_ms(stats.bucket(1.0))
    assert w.service_p99_ms == stats.upper_ms(stats.bucket(20.0))
    empty = window(stats.Counts(), now)
    assert (empty.items_per_s, empty.wait_p50_ms, empty.service_p99_ms) == (0.0, None, None)


def test_queue_totals_over_lanes() -> None:
    q = QueueStatus(
        "q",
        (
            Lane("high", length=3, in_flight=1, lag=2, oldest_waiting_age_ms=50),
            Lane("normal", length=10, in_flight=4, lag=6, oldest_waiting_age_ms=900),
            Lane("low", length=1, in_flight=2, lag=0),  # entries deleted under the PEL
        ),
    )
    assert [lane.waiting for lane in q.lanes] == [2, 6, 0]
    assert (q.waiting, q.in_flight, q.lag, q.oldest_waiting_age_ms) == (8, 7, 8, 900)
    unknown = QueueStatus("q", (Lane("high", lag=None), Lane("normal", lag=0)))
    assert unknown.lag is None
    assert unknown.oldest_waiting_age_ms is None


def _snapshot() -> Snapshot:
    lanes = (
        Lane("high", 1, 0, 1, 1500),
        Lane("normal", 12, 2, 10, 4200),
        Lane("low", 0, 0, 0, None),
    )
    w = Window(55.0, 1100, 40, {"ok": 1099, "error": 1}, 1.5, 23.0, 12.0, 40.0)
    queue = QueueStatus("embed", lanes, 3, 1, 1, 1, w)
    workers = (
        WorkerStatus("gpu-1", "busy", ("embed",), 2, "gpu", 4242, 40, 1100, 350, 9_000_000),
        WorkerStatus("gpu-0", "dead", ("embed",), 5),
    )
    return Snapshot("127.0.0.1:7001", "rb", 1_700_000_000_000, (queue,), workers)


def test_json_fields() -> None:
    out = to_json(_snapshot())
    assert out["schema"] == 1
    assert (out["redis"], out["namespace"], out["time_ms"]) == (
        "127.0.0.1:7001",
        "rb",
        1_700_000_000_000,
    )
    assert out["queues"] == [
        {
            "name": "embed",
            "waiting": 11,
            "in_flight": 2,
            "delayed": 3,
            "dead": 1,
            "consumers": {"alive": 1, "dead": 1},
            "oldest_waiting_age_ms": 4200,
            "lag": 11,
            "lanes": {
                "high": {
                    "length": 1,
                    "waiting": 1,
                    "in_flight": 0,
                    "lag": 1,
                    "oldest_waiting_age_ms": 1500,
                },
                "normal": {
                    "length": 12,
                    "waiting": 10,
                    "in_flight": 2,
                    "lag": 10,
                    "oldest_waiting_age_ms": 4200,
                },
                "low": {
                    "length": 0,
                    "waiting": 0,
                    "in_flight": 0,
                    "lag": 0,
                    "oldest_waiting_age_ms": None,
                },
            },
            "last_minute": {
                "seconds": 55.0,
                "items": 1100,
                "batches": 40,
                "items_per_s": 20.0,
                "outcomes": {"ok": 1099, "error": 1},
                "wait_ms": {"p50": 1.5, "p99": 23.0},
                "service_ms": {"p50": 12.0, "p99": 40.0},
            },
        }
    ]
    assert out["workers"] == [
        {"name": "gpu-1", "state": "busy", "host": "gpu", "pid": 4242, "queues": ["embed"],
         "in_flight": 2, "batches": 40, "items": 1100, "last_batch_age_ms": 350,
         "busy_us": 9_000_000},
        {"name": "gpu-0", "state": "dead", "host": None, "pid": None, "queues": ["embed"],
         "in_flight": 5, "batches": None, "items": None, "last_batch_age_ms": None,
         "busy_us": None},
    ]  # fmt: skip


def _text(renderable: object, width: int = 100) -> str:
    console = Console(width=width, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_render_shows_both_tables() -> None:
    text = _text(render(_snapshot()))
    assert "queues on 127.0.0.1:7001 (namespace rb)" in text
    row = next(line for line in text.splitlines() if line.startswith("embed"))
    assert row.split() == [
        "embed",
        "11",
        "2",
        "3",
        "1",
        "1/1",
        "4.2s",
        "11",
        "20.0",
        "1.5/23",
        "12/40",
    ]
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line.startswith("gpu-")}
    assert rows["gpu-1"] == ["gpu-1", "busy", "gpu", "4242", "embed", "2", "40", "1,100", "350ms"]
    assert rows["gpu-0"] == ["gpu-0", "dead", "-", "-", "embed", "5", "-", "-", "-"]


def test_render_fits_80_columns() -> None:
    text = _text(render(_snapshot()), width=80)
    assert "…" not in text  # nothing was cut to fit


def test_render_says_when_there_is_nothing() -> None:
    empty = Snapshot("127.0.0.1:7001", "rb", 0, (), ())
    assert _text(render(empty)).strip() == (
        "no queues in namespace rb on 127.0.0.1:7001: nothing has been submitted or served here yet"
    )


@pytest.mark.parametrize(
    ("ms", "text"),
    [(None, "-"), (830, "830ms"), (4200, "4.2s"), (185_000, "3m05s"), (7_830_000, "2h10m")],
)
def test_age_format(ms: int | None, text: str) -> None:
    assert age(ms) == text


@pytest.mark.parametrize(
    ("ms", "text"), [(None, "-"), (0.244, "0.2"), (23.8, "24"), (2400.0, "2,400")]
)
def test_latency_format(ms: float | None, text: str) -> None:
    assert latency(ms) == text


@pytest.mark.parametrize(
    ("args", "mentions"),
    [
        (["--interval", "0"], "--interval"),
        (["--watch", "--json"], "cannot be combined"),
        (["--namespace", "a:b"], "namespace"),
        (["--redis-url", "http://x"], "http://x"),
    ],
)
def test_bad_options_exit_2_with_one_line(args: list[str], mentions: str) -> None:
    result = CliRunner().invoke(main, ["status", *args], env={"REDBATCH_NAMESPACE": None})
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("redbatch: error:")
    assert mentions in lines[0]


def test_the_command_group_loads_no_command_until_one_runs() -> None:
    # Lazy commands: `redbatch worker` never loads rich tables, `redbatch status` no worker.
    code = (
        "import sys, redbatch.cli; "
        "print(sorted(m for m in sys.modules "
        "if m.startswith(('redbatch.ops', 'redbatch.bench', 'redbatch.demo', 'rich')) "
        "or m.startswith('redbatch.cli.') and m != 'redbatch.cli.common'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=subprocess_env(), capture_output=True, text=True,
        check=True,
    )  # fmt: skip
    assert out.stdout.strip() == "[]"
