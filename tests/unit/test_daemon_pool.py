"""The sync producer's admission pool: a job never waits behind the pool's stop."""

from __future__ import annotations

import threading

from redbatch.producer.background import DaemonPool


def test_a_job_submitted_after_stop_still_runs_while_idle_threads_exit() -> None:
    pool = DaemonPool("test-pool", 2)
    assert pool.submit(lambda: 1).result(timeout=5) == 1  # a thread now idles in get()
    pool.stop()
    # Before the fix this job was queued behind the idle thread's stop sentinel and never ran.
    assert pool.submit(lambda: 2).result(timeout=5) == 2


def test_a_job_after_stop_runs_on_the_callers_thread_and_its_error_reaches_the_future() -> None:
    pool = DaemonPool("test-pool", 1)
    pool.stop()
    ran_on = pool.submit(threading.get_ident).result(timeout=5)
    assert ran_on == threading.get_ident()
    failing = pool.submit(lambda: 1 / 0)
    assert isinstance(failing.exception(timeout=5), ZeroDivisionError)


def test_jobs_before_stop_run_on_pool_threads() -> None:
    pool = DaemonPool("test-pool", 2)
    idents = {pool.submit(threading.get_ident).result(timeout=5) for _ in range(5)}
    pool.stop()
    assert threading.get_ident() not in idents
