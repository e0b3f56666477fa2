"""``redbatch demo``: the README's main command, on a private Redis it starts and removes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from helpers import subprocess_env
from helpers.dashboard import http
from helpers.workers import wait_until


def _demo(*args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in subprocess_env().items() if not k.startswith("REDBATCH_")}
    # SIGINT ignored, as in a background job of a non-interactive shell: the demo must
    # still stop on Ctrl-C.
    ignoring_sigint = (
        "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
        "sys.argv[0] = 'redbatch'; runpy.run_module('redbatch', run_name='__main__')"
    )
    return subprocess.Popen(
        [sys.executable, "-c", ignoring_sigint, "demo", *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(cmdline)
    return found


def test_demo_runs_end_to_end_prints_its_tables_and_leaves_nothing_behind() -> None:
    demo = _demo("--model", "echo", "--requests", "1000")
    out, err = demo.communicate(timeout=120)
    assert demo.returncode == 0, err
    assert "1000 requests, 2 echo workers" in out
    assert "results checked" in out and "1000/1000" in out
    assert "latency p99" in out
    # The status table, with every request counted in the workers' statistics.
    assert "queues on 127.0.0.1:" in out
    demo_row = next(line for line in out.splitlines() if line.startswith("demo "))
    assert demo_row.split()[1:5] == ["0", "0", "0", "0"]  # waiting, in flight, delayed, dead
    assert "workers" in out
    port = re.search(r"redis://127\.0\.0\.1:(\d+)", err)
    assert port, err
    # Everything it started is gone: no worker, scheduler or redis-server on its port.
    assert _processes_mentioning(f"127.0.0.1:{port.group(1)}") == []
    assert _processes_mentioning(f"--port {port.group(1)}") == []


def test_ctrl_c_stops_everything_the_demo_started() -> None:
    demo = _demo("--model", "echo", "--requests", "100000000")
    try:
        _interrupt_and_check(demo)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()


def test_sigterm_stops_everything_the_demo_started_too() -> None:
    demo = _demo("--model", "echo", "--requests", "100000000")
    try:
        _interrupt_and_check(demo, signal.SIGTERM)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()


def _interrupt_and_check(
    demo: subprocess.Popen[str], signum: signal.Signals = signal.SIGINT
) -> None:
    assert demo.stderr is not None
    started = ""
    while "workers are starting" not in started:
        line = demo.stderr.readline()
        assert line, "the demo ended before starting its workers"
        started += line
    port = re.search(r"redis://127\.0\.0\.1:(\d+)", started)
    assert port, started
    # The workers are up once they appear in the process table with the demo's Redis.
    wait_until(lambda: len(_processes_mentioning(f"127.0.0.1:{port.group(1)}")) >= 3)
    demo.send_signal(signum)
    _, err = demo.communicate(timeout=60)
    assert demo.returncode == 130, err
    assert "interrupted" in err
    assert "Traceback" not in err
    assert _processes_mentioning(f"127.0.0.1:{port.group(1)}") == []
    assert _processes_mentioning(f"--port {port.group(1)}") == []


def test_demo_with_the_dashboard_keeps_it_up_until_stopped() -> None:
    demo = _demo("--model", "echo", "--requests", "300", "--workers", "1", "--dashboard")
    assert demo.stderr is not None
    lines: list[str] = []
    for line in demo.stderr:  # bounded by the test's timeout
        lines.append(line)
        if "everything stays up for the dashboard at" in line:
            break
    else:
        raise AssertionError(f"the demo ended without keeping the dashboard up: {lines}")
    page = line.split(" at ", 1)[1].split(";", 1)[0]
    overview = http(f"{page}api/overview")
    assert overview.status == 200, overview.body
    [queue] = overview.body["queues"]
    assert queue["name"] == "demo" and queue["waiting"] == 0
    assert overview.body["namespace"].startswith("demo")
    demo.send_signal(signal.SIGTERM)
    out, err = demo.communicate(timeout=60)
    assert demo.returncode == 0, err
    assert "300 requests, 1 echo workers" in out
    assert "stopped the dashboard and everything the demo started" in err
    port = page.rsplit(":", 1)[1].strip("/")
    assert _processes_mentioning(f"--port {port}") == []
