"""Settings both processes read (worker and scheduler): each declared once here, a field of
each config class in ``redbatch.config``, so a name has one variable, one default, one help."""

from __future__ import annotations

from typing import Any

from redbatch.settings import setting
from redbatch.transport.connection import DEFAULT_URL

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_LOG_FORMATS = ("text", "json")
# TCP port of the Prometheus endpoint; 0 = no endpoint.
MAX_PORT = 65535


def redis_url() -> Any:
    return setting(
        default=DEFAULT_URL, env="REDBATCH_REDIS_URL", metavar="URL",
        help="the Redis to use (redis://, rediss:// or unix://)",
    )  # fmt: skip


def namespace() -> Any:
    return setting(
        default="rb", env="REDBATCH_NAMESPACE", help="key prefix, for several tenants on one Redis"
    )


def result_ttl() -> Any:
    return setting(
        default=3600, env="REDBATCH_RESULT_TTL", flag="--result-ttl", bounds=(1, 30 * 86_400),
        help="seconds results and reply lists live",
    )  # fmt: skip


def dead_maxlen() -> Any:
    return setting(
        default=100_000, env="REDBATCH_DEAD_MAXLEN", bounds=(1, 10**9),
        help="the dead-letter stream is trimmed (approximately) past this many entries",
    )  # fmt: skip


def max_attempts() -> Any:
    return setting(
        default=3, env="REDBATCH_MAX_ATTEMPTS", bounds=(1, 1000),
        help="deliveries before a request is dead-lettered",
    )  # fmt: skip


def log_level() -> Any:
    return setting(default="INFO", env="REDBATCH_LOG_LEVEL", choices=_LOG_LEVELS, help="log level")


def log_format() -> Any:
    return setting(
        default="text", env="REDBATCH_LOG_FORMAT", choices=_LOG_FORMATS,
        help="text, or json (one object per line, for log collectors)",
    )  # fmt: skip


def metrics_port() -> Any:
    return setting(
        default=0, env="REDBATCH_METRICS_PORT", bounds=(0, MAX_PORT),
        help="serve Prometheus metrics on this port; 0 = off",
    )  # fmt: skip


def cluster() -> Any:
    return setting(
        default=None, env="REDBATCH_CLUSTER", flag="--cluster/--no-cluster", shown="auto",
        help="Redis Cluster client (yes), single node (no), or ask the server (auto)",
    )  # fmt: skip
