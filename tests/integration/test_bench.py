"""``redbatch bench``: real runs on a private Redis it starts (or the session's), the JSON
report's numbers checked against each other, bad input, and Ctrl-C leaving nothing behind."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from helpers import subprocess_env
from helpers.workers import WorkerProcess, wait_until

MAX_BATCH_SIZE = 32  # the worker's default


def _bench(*args: str, ignore_sigint: bool = False) -> subprocess.Popen[str]:
    # SIGINT ignored, as in a background job of a non-interactive shell: bench must still
    # stop on Ctrl-C.
    ignoring = "import signal; signal.signal(signal.SIGINT, signal.SIG_IGN); " * ignore_sigint
    code = f"{ignoring}import runpy, sys; sys.argv[0] = 'redbatch'; " + (
        "runpy.run_module('redbatch', run_name='__main__')"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code, "bench", *args],
        env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _run(*args: str) -> tuple[int, str, str]:
    proc = _bench(*args)
    out, err = proc.communicate(timeout=90)
    return proc.returncode, out, err


def _processes_mentioning(text: str) -> dict[int, str]:
    """pid -> command line of every process (but this one) whose command line has ``text``."""
    found = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid() and text in _cmdline(proc):
            found[int(proc.name)] = _cmdline(proc)
    return found


def _port(err: str) -> str:
    found = re.search(r"redis://127\.0\.0\.1:(\d+)", err)
    assert found, err
    return found.group(1)


def _assert_nothing_left(port: str) -> None:
    assert _processes_mentioning(f"127.0.0.1:{port}") == {}
    assert _processes_mentioning(f"--port {port}") == {}


def _assert_consistent(report: dict[str, Any], requests: int) -> None:
    assert report["schema"] == 1
    assert report["requests"] == requests
    assert report["ok"] == requests and report["failed"] == 0 and report["lost"] == 0
    assert report["outcomes"] == {"ok": requests}
    latency = report["latency_ms"]
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
    assert latency["max"] < report["seconds"] * 1000 + 1
    assert report["throughput_rps"] == pytest.approx(requests / report["seconds"], rel=0.02)
    sizes = {int(size): n for size, n in report["batch_sizes"].items()}
    assert sum(sizes.values()) == report["batch_sampled"]
    assert all(1 <= size <= MAX_BATCH_SIZE for size in sizes)
    assert report["redis_cpu_s"] > 0
    assert report["redis_cpu_us_per_request"] == pytest.approx(
        report["redis_cpu_s"] * 1e6 / requests, abs=0.2 + 1e3 / requests
    )


def test_closed_loop_json_report_is_consistent_and_leaves_nothing_behind() -> None:
    code, out, err = _run("--embedded", "--requests", "300", "--json")
    assert code == 0, err
    report = json.loads(out)
    _assert_consistent(report, 300)
    assert report["batch_sampled"] == 300  # --sample 1000 covers every request
    assert report["worker_cpu_s"] is not None and report["worker_cpu_s"] >= 0
    settings = report["settings"]
    assert settings["loop"] == "closed" and settings["concurrency"] == 64
    assert settings["embedded"] is True and settings["results_checked"] is True
    assert settings["workers"] == 2
    _assert_nothing_left(_port(err))


def test_open_loop_keeps_its_schedule_and_samples_every_kth_request() -> None:
    code, out, err = _run(
        "--embedded", "--requests", "300", "--rate", "500", "--arrivals", "fixed",
        "--sample", "100", "--payload-bytes", "1000", "--json",
    )  # fmt: skip
    assert code == 0, err
    report = json.loads(out)
    _assert_consistent(report, 300)
    # The last request is due 299/500 s after the first: the run cannot be shorter.
    assert report["seconds"] >= 299 / 500
    assert report["batch_sampled"] == 100  # requests 0, 3, 6, ... 297
    settings = report["settings"]
    assert settings["loop"] == "open" and settings["rate"] == 500
    assert settings["concurrency"] is None and settings["payload_bytes"] == 1000


def test_workers_0_loads_the_workers_already_serving_a_queue(
    redis_url: str,
    namespace: str,
    queue: str,
    worker_factory: Callable[..., WorkerProcess],
    redis_client: redis.Redis,
) -> None:
    code, _, err = _run("--redis-url", redis_url, "--namespace", namespace, "--queue", queue,
                        "--workers", "0")  # fmt: skip
    assert code == 2, err
    assert f"no worker serves queue {queue}" in err

    worker = worker_factory([queue])
    wait_until(lambda: redis_client.exists(f"{namespace}:{{{queue}}}:worker:{worker.name}"))
    code, out, err = _run(
        "--redis-url", redis_url, "--namespace", namespace, "--queue", queue,
        "--workers", "0", "--requests", "200", "--json",
    )  # fmt: skip
    assert code == 0, err
    report = json.loads(out)
    _assert_consistent(report, 200)
    assert report["worker_cpu_s"] is None and report["worker_cpu_us_per_request"] is None
    # The user's queue stays known: bench removes only a queue it made up.
    assert redis_client.sismember(f"{namespace}:queues", queue)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("--embedded", "--requests", "-5"), 2, "--requests must be at least 1"),
        (("--redis-url", "redis://127.0.0.1:1/0"), 3, "cannot use Redis at"),
        (("--embedded", "--handler", "no_such_module:fn"), 2, "cannot import handler"),
    ],
)
def test_bad_input_is_one_line_and_an_exit_code(
    args: tuple[str, ...], code: int, message: str
) -> None:
    returncode, out, err = _run(*args)
    assert returncode == code, err
    error_lines = [line for line in err.splitlines() if line.startswith("redbatch: error:")]
    assert len(error_lines) == 1 and message in error_lines[0], err
    assert "Traceback" not in err and out == ""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_mid_run_stops_everything_bench_started(signum: signal.Signals) -> None:
    bench = _bench("--embedded", "--requests", "100000000", "--json", ignore_sigint=True)
    try:
        port = _wait_for_load(bench)
        bench.send_signal(signum)
        out, err = bench.communicate(timeout=60)
        assert bench.returncode == 130, err
        assert "interrupted" in err and "Traceback" not in err and out == ""
        _assert_nothing_left(port)
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()


def _wait_for_load(bench: subprocess.Popen[str]) -> str:
    """Bench's Redis port, once the load runs (results appear in its private Redis)."""
    assert bench.stderr is not None
    started = ""
    while "workers on queue" not in started:
        line = bench.stderr.readline()
        assert line, "bench ended before starting its workers"
        started += line
    port = _port(started)
    client = redis.Redis(port=int(port))
    try:
        wait_until(lambda: next(client.scan_iter(match="rb:*:result:*"), None))
    finally:
        client.close()
    return port


def test_a_worker_dying_mid_run_ends_the_run_with_an_error() -> None:
    bench = _bench("--embedded", "--requests", "100000000", "--json")
    try:
        port = _wait_for_load(bench)
        # This bench's workers: their command line names its private Redis's port.
        mine = _processes_mentioning(f"redis://127.0.0.1:{port}/")
        [worker, *_] = [pid for pid, cmdline in mine.items() if " worker " in cmdline]
        os.kill(worker, signal.SIGKILL)
        out, err = bench.communicate(timeout=60)
        assert bench.returncode == 1, err
        assert "worker 0 exited with code -9 during the run" in err or (
            "worker 1 exited with code -9 during the run" in err
        ), err
        assert "Traceback" not in err and out == ""
        _assert_nothing_left(port)
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_a_run_nothing_answers_ends_after_one_request_timeout() -> None:
    # Each batch sleeps 9 s and requests may take 1 s: every one is lost, and bench says so
    # after 1 + 5 (grace) + 1 s instead of waiting out all of them.
    code, out, err = _run(
        "--embedded", "--workers", "1", "--requests", "1000", "--timeout", "1",
        "--handler", "redbatch.handlers:sleep", "--handler-option", "seconds=9",
    )  # fmt: skip
    assert code == 1, err
    # How many wait at that moment depends on timing, not on bench: the first requests are
    # lost (after 1 + 5 s) before the stall is called (after 7 s), and the closed loop tops
    # up in groups as they go; at most the 64 it keeps in flight, and some (or no stall).
    stalled = re.search(r"no request answered for 7 s while (\d+) waited \(0 ok, \d+ lost", err)
    assert stalled is not None, err
    assert 0 < int(stalled[1]) <= 64, err
    assert "Traceback" not in err and out == ""
    _assert_nothing_left(_port(err))
