"""The worker pool's pure parts: restart budget, --gpus, how children are planned, and the
arguments each child gets."""

from __future__ import annotations

import pytest

from redbatch.errors import ConfigError
from redbatch.worker.pool import RestartBudget, child_argv, parse_gpus, plan


def test_restart_budget_allows_so_many_within_the_window() -> None:
    budget = RestartBudget(restarts=5, window_s=60)
    assert all(budget.allow(t) for t in (0, 1, 2, 3, 4))
    assert not budget.allow(5)  # a sixth within 60 s
    assert not budget.allow(59.9)
    assert budget.allow(60.0)  # the first has left the window
    assert not budget.allow(60.5)


def test_gpus() -> None:
    assert parse_gpus("0,1,2,3") == ("0", "1", "2", "3")
    assert parse_gpus(" 2 3 ") == ("2", "3")
    assert parse_gpus("GPU-8a1b,MIG-3c") == ("GPU-8a1b", "MIG-3c")
    assert parse_gpus("all", lambda: 4) == ("0", "1", "2", "3")
    with pytest.raises(ConfigError, match="no CUDA device found"):
        parse_gpus("all", lambda: 0)
    for bad in ("", "0,0", "one"):
        with pytest.raises(ConfigError, match="--gpus"):
            parse_gpus(bad)


def test_plan() -> None:
    assert plan(3, ()) == [None, None, None]
    assert plan(1, ("0", "1")) == ["0", "1"]  # one per device
    assert plan(4, ("0", "1")) == ["0", "1", "0", "1"]  # two per device
    with pytest.raises(ConfigError, match="multiple"):
        plan(3, ("0", "1"))
    with pytest.raises(ConfigError, match="at least 1"):
        plan(0, ())


def test_child_argv_drops_what_the_pool_decides() -> None:
    argv = [
        "embed", "--processes", "2", "--gpus=0,1", "--name", "pool", "--metrics-port=9100",
        "--max-batch-size", "8", "--check", "--handler", "m:f",
    ]  # fmt: skip
    assert child_argv(argv, "pool-1", 9102) == [
        "embed", "--max-batch-size", "8", "--handler", "m:f",
        "--name", "pool-1", "--metrics-port", "9102",
    ]  # fmt: skip
    assert child_argv(["q"], "p-0", 0) == ["q", "--name", "p-0"]
