"""The telemetry settings of workers and schedulers: --metrics-port and --log-format."""

from __future__ import annotations

import pytest

from redbatch.config import SchedulerConfig, WorkerConfig
from redbatch.errors import ConfigError

WORKER = {"queues": ("q",), "handler": "m:f"}


def test_defaults_are_no_endpoint_and_text_logs() -> None:
    worker = WorkerConfig.from_env({}, **WORKER)
    scheduler = SchedulerConfig.from_env({})
    assert (worker.metrics_port, worker.log_format) == (0, "text")
    assert (scheduler.metrics_port, scheduler.log_format) == (0, "text")


def test_environment_sets_both_for_workers_and_schedulers() -> None:
    env = {"REDBATCH_METRICS_PORT": "9100", "REDBATCH_LOG_FORMAT": "JSON"}
    assert WorkerConfig.from_env(env, **WORKER).metrics_port == 9100
    scheduler = SchedulerConfig.from_env(env)
    assert (scheduler.metrics_port, scheduler.log_format) == (9100, "json")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"metrics_port": -1}, "metrics_port must be an integer from 0 to 65535"),
        ({"metrics_port": 65536}, "--metrics-port / REDBATCH_METRICS_PORT"),
        ({"log_format": "xml"}, "log_format must be one of text, json"),
    ],
)
def test_bad_values_name_the_setting(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        WorkerConfig.from_env({}, **(WORKER | overrides))
    with pytest.raises(ConfigError, match=message):
        SchedulerConfig.from_env({}, **overrides)


def test_non_numeric_port_in_the_environment() -> None:
    with pytest.raises(ConfigError, match="metrics_port must be an integer"):
        SchedulerConfig.from_env({"REDBATCH_METRICS_PORT": "ninety"})
