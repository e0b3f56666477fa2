"""The dashboard's pure parts: shards summed into one queue, the slot history, busy ratios,
the write permission (token, session, CSRF, Origin), and its settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from redbatch.dashboard import overview
from redbatch.dashboard.security import READ_ONLY, Guard
from redbatch.dashboard.server import Settings, is_loopback, read_token
from redbatch.errors import ConfigError
from redbatch.ops.status.model import Lane, QueueStatus, Snapshot, WorkerStatus
from redbatch.protocol import stats

NOW = 1_700_000_005.0  # 5 s into a slot


def counts(items: int, size: int, wait_ms: float = 1.0) -> stats.Counts:
    c = stats.Counts()
    for _ in range(items // size):
        c.add_batch([wait_ms] * size, 2.0, ["ok"] * size)
    return c


def lanes(waiting: int, in_flight: int = 0, lag: int | None = 0, age: int | None = None) -> tuple:
    return (
        Lane("high"),
        Lane("normal", waiting + in_flight, in_flight, lag, age),
        Lane("low"),
    )


def test_a_sharded_queue_sums_its_parts_and_keeps_them() -> None:
    parts = (
        QueueStatus("embed", lanes(0), dead=1, consumers_alive=2),
        QueueStatus("embed#0", lanes(5, 1, 5, 300), delayed=2, consumers_alive=2),
        QueueStatus("embed#1", lanes(7, 0, None, 900), dead=3, consumers_alive=2),
        QueueStatus("solo", lanes(1)),
    )
    reads = overview.SlotReads(
        physical={"embed#0": counts(64, 32), "embed#1": counts(8, 8)},
        logical={"embed": counts(72, 8), "solo": stats.Counts()},
    )
    snapshot = Snapshot("r:1", "rb", int(NOW * 1000), parts, ())
    doc = overview.document(snapshot, reads, overview.History(), {}, NOW)
    embed, solo = doc["queues"]
    assert (embed["name"], embed["waiting"], embed["in_flight"], embed["dead"]) == (
        "embed",
        12,
        1,
        4,
    )
    assert embed["delayed"] == 2 and embed["consumers"] == {"alive": 2, "dead": 0}
    assert embed["lag"] is None  # one part's lag is unknown
    assert embed["oldest_waiting_age_ms"] == 900
    assert embed["lanes"]["normal"]["waiting"] == 12
    assert embed["shards"] == ["embed", "embed#0", "embed#1"]
    assert [p["name"] for p in embed["parts"]] == embed["shards"]
    assert embed["parts"][1]["batch_sizes"][-1] == {"le": 32, "batches": 2}
    assert embed["last_minute"]["items"] == 72
    assert embed["batch_sizes"] == [{"le": 1, "batches": 0}, {"le": 2, "batches": 0},
                                    {"le": 4, "batches": 0}, {"le": 8, "batches": 9}]  # fmt: skip
    assert solo["shards"] == [] and solo["parts"] == [] and solo["batch_sizes"] == []
    assert set(doc["history"]["queues"]) == {"embed", "solo"}


def test_history_keeps_slots_past_their_ttl_and_never_shrinks_one() -> None:
    history = overview.History(keep=30)
    slot = stats.slot_of(NOW)
    history.update("q", slot - 20, counts(40, 8))
    history.update("q", slot - 20, stats.Counts())  # read again after the hash expired
    history.update("q", slot, counts(16, 16, wait_ms=5.0))
    series = history.series("q", NOW)
    assert len(series) == 21 and series[0]["t_ms"] == (slot - 20) * stats.SLOT_S * 1000
    assert series[0]["items"] == 40 and series[0]["mean_batch"] == 8
    assert series[1]["items"] == 0 and series[1]["wait_p50_ms"] is None
    # The current slot began 5 s ago: its rate is over those 5 s, not 10.
    assert series[-1]["items_per_s"] == pytest.approx(16 / 5, rel=1e-3)
    assert series[-1]["wait_p50_ms"] >= 5.0
    later = NOW + 15 * stats.SLOT_S
    history.prune({"q"}, later)  # keeps 30 slots: slot - 20 goes, slot stays
    assert [p["items"] for p in history.series("q", later) if p["items"]] == [16]
    history.prune(set(), NOW)
    assert len(history.series("q", NOW)) == overview.READ_SLOTS


def test_busy_ratio_is_handler_time_growth_over_wall_time() -> None:
    busy = overview.BusyRatios()

    def worker(busy_us: int | None) -> WorkerStatus:
        return WorkerStatus("w1", "busy", ("q",), busy_us=busy_us)

    assert busy.observe(0, [worker(0)]) == {"w1": None}  # one sample: no ratio yet
    assert busy.observe(1000, [worker(500_000)]) == {"w1": None}  # too short a span
    assert busy.observe(2000, [worker(1_000_000)]) == {"w1": 0.5}
    assert busy.observe(14_000, [worker(1_000_000)])["w1"] == pytest.approx(0.0, abs=0.1)
    assert busy.observe(16_000, [worker(10)]) == {"w1": None}  # restarted: counts anew
    assert busy.observe(17_000, [WorkerStatus("w2", "dead", ("q",))]) == {"w2": None}


def test_writes_need_the_token_and_a_session_needs_its_csrf_token() -> None:
    read_only = Guard(None)
    refusal = read_only.check_write({"x-redbatch-token": "t" * 20}, None)
    assert refusal is not None and (refusal.status, refusal.reason) == (403, READ_ONLY)
    assert read_only.login("anything") is None

    guard = Guard("s3cret-token-0123456789")
    assert guard.check_write({"authorization": "Bearer s3cret-token-0123456789"}, None) is None
    assert guard.check_write({"x-redbatch-token": "s3cret-token-0123456789"}, None) is None
    assert guard.check_write({"authorization": "Bearer nope"}, None).status == 401  # type: ignore[union-attr]
    assert guard.check_write({}, None).status == 401  # type: ignore[union-attr]
    assert guard.login("nope") is None
    session = guard.login("s3cret-token-0123456789")
    assert session is not None
    csrf = guard.csrf(session)
    assert csrf and guard.check_write({"x-csrf-token": csrf}, session) is None
    assert guard.check_write({"x-csrf-token": "forged"}, session).status == 403  # type: ignore[union-attr]
    assert guard.check_write({}, session).status == 403  # type: ignore[union-attr]
    elsewhere = {"x-csrf-token": csrf, "origin": "http://evil.example", "host": "127.0.0.1:1"}
    assert guard.check_write(elsewhere, session).status == 403  # type: ignore[union-attr]
    here = {"x-csrf-token": csrf, "origin": "http://127.0.0.1:1", "host": "127.0.0.1:1"}
    assert guard.check_write(here, session) is None
    guard.logout(session)
    assert guard.csrf(session) is None


def test_sessions_expire() -> None:
    now = [0.0]
    guard = Guard("s3cret-token-0123456789", clock=lambda: now[0])
    session = guard.login("s3cret-token-0123456789")
    now[0] += 12 * 3600 + 1
    assert guard.csrf(session) is None


def settings(**changes: object) -> Settings:
    base = {
        "redis_url": "redis://127.0.0.1:1/0", "namespace": "rb", "host": "127.0.0.1",
        "port": 0, "interval_s": 2.0, "allow_writes": False, "token_file": None, "cluster": None,
    }  # fmt: skip
    base.update(changes)
    return Settings(**base)  # type: ignore[arg-type]


def test_the_token_comes_from_its_file_or_is_made_up(tmp_path: Path) -> None:
    assert read_token(settings()) == (None, "read-only")
    made, said = read_token(settings(allow_writes=True))
    assert made is not None and len(made) >= 16 and made in said
    path = tmp_path / "token"
    path.write_text("  from-a-file-0123456789\n")
    assert (
        read_token(settings(allow_writes=True, token_file=str(path)))[0] == "from-a-file-0123456789"
    )
    path.write_text("short")
    with pytest.raises(ConfigError, match="at least 16 characters"):
        read_token(settings(allow_writes=True, token_file=str(path)))
    with pytest.raises(ConfigError, match="is for --allow-writes"):
        read_token(settings(token_file=str(path)))


def test_loopback_hosts() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "localhost", "::1", "127.1.2.3"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.1", "example.com"))
