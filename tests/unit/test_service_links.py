"""Kubernetes service-link variables: ignored by shape, a real typo still refused, and a
link that collides with a setting explained."""

from __future__ import annotations

import pytest

from redbatch.config import SchedulerConfig, WorkerConfig, check_environment
from redbatch.errors import ConfigError

# What the kubelet puts into every pod of a namespace holding a Service "redbatch" (ports
# named metrics 9100 and probe 9101/udp) and a Service "redbatch-scheduler", besides Redis.
SERVICE_LINKS = {
    "REDBATCH_SERVICE_HOST": "10.96.0.12",
    "REDBATCH_SERVICE_PORT": "9100",
    "REDBATCH_SERVICE_PORT_METRICS": "9100",
    "REDBATCH_PORT": "tcp://10.96.0.12:9100",
    "REDBATCH_PORT_9100_TCP": "tcp://10.96.0.12:9100",
    "REDBATCH_PORT_9100_TCP_PROTO": "tcp",
    "REDBATCH_PORT_9100_TCP_PORT": "9100",
    "REDBATCH_PORT_9100_TCP_ADDR": "10.96.0.12",
    "REDBATCH_PORT_9101_UDP": "udp://10.96.0.12:9101",
    "REDBATCH_SCHEDULER_SERVICE_HOST": "10.96.0.13",
    "REDBATCH_SCHEDULER_SERVICE_PORT": "9100",
    "REDBATCH_SCHEDULER_PORT": "tcp://10.96.0.13:9100",
    "REDBATCH_SCHEDULER_PORT_9100_TCP": "tcp://10.96.0.13:9100",
    "REDBATCH_SCHEDULER_PORT_9100_TCP_ADDR": "10.96.0.13",
    "REDBATCH_SCHEDULER_PORT_9100_TCP_PORT": "9100",
    "REDBATCH_SCHEDULER_PORT_9100_TCP_PROTO": "tcp",
    "REDIS_SERVICE_HOST": "10.96.0.20",
    "REDIS_PORT": "tcp://10.96.0.20:6379",
    "KUBERNETES_SERVICE_HOST": "10.96.0.1",
    "KUBERNETES_PORT_443_TCP": "tcp://10.96.0.1:443",
}


def test_service_links_are_ignored() -> None:
    check_environment(SERVICE_LINKS)
    env = SERVICE_LINKS | {"REDBATCH_QUEUES": "embed", "REDBATCH_HANDLER": "m:f"}
    assert WorkerConfig.from_env(env).queues == ("embed",)
    assert SchedulerConfig.from_env(SERVICE_LINKS | {"REDBATCH_METRICS_PORT": "9100"}).metrics_port
    # An IPv6 cluster's addresses have the same shape.
    check_environment(
        {"REDBATCH_SERVICE_HOST": "fd00::12", "REDBATCH_PORT": "tcp://[fd00::12]:9100"}
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("REDBATCH_MAX_BATCH_SZE", "4"),  # a typo
        ("REDBATCH_METRIC_PORT", "9100"),  # a typo whose name ends like a link's
        ("REDBATCH_PORT", "9100"),  # a link's name, not a link's value
        ("REDBATCH_SERVICE_HOST", "redis.example"),
    ],
)
def test_other_unknown_names_still_fail(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"^unknown environment variable {name} "):
        check_environment(SERVICE_LINKS | {name: value})


def test_a_link_that_collides_with_a_setting_says_so() -> None:
    env = {"REDBATCH_METRICS_PORT": "tcp://10.96.0.14:9100"}  # a Service "redbatch-metrics"
    with pytest.raises(ConfigError) as caught:
        SchedulerConfig.from_env(env, metrics_port=9100)
    message = str(caught.value)
    assert "looks like a Kubernetes service link (a Service named redbatch-metrics)" in message
    assert "enableServiceLinks: false" in message
    assert "\n" not in message
