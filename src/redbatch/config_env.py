"""The environment side of configuration: every setting's ``REDBATCH_*`` name, and the text
of a variable (or option) turned into the setting's value, with one readable line when it
cannot be."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from redbatch.errors import ConfigError
from redbatch.protocol.keys import QUEUE_NAME

ENV_PREFIX = "REDBATCH_"

# setting name -> environment variable, for every setting of every part.
ENV_NAMES: dict[str, str] = {
    "redis_url": "REDBATCH_REDIS_URL",
    "namespace": "REDBATCH_NAMESPACE",
    "queues": "REDBATCH_QUEUES",
    "handler": "REDBATCH_HANDLER",
    "handler_options": "REDBATCH_HANDLER_OPTIONS",
    "name": "REDBATCH_WORKER_NAME",
    "max_batch_size": "REDBATCH_MAX_BATCH_SIZE",
    "max_wait_ms": "REDBATCH_MAX_WAIT_MS",
    "max_batch_cost": "REDBATCH_MAX_BATCH_COST",
    "preferred_batch_sizes": "REDBATCH_PREFERRED_BATCH_SIZES",
    "priority_aging_ms": "REDBATCH_PRIORITY_AGING_MS",
    "target_latency_ms": "REDBATCH_TARGET_LATENCY_MS",
    "block_ms": "REDBATCH_BLOCK_MS",
    "result_ttl_s": "REDBATCH_RESULT_TTL",
    "dead_maxlen": "REDBATCH_DEAD_MAXLEN",
    "max_payload_bytes": "REDBATCH_MAX_PAYLOAD_BYTES",
    "log_level": "REDBATCH_LOG_LEVEL",
    "batch_timeout_s": "REDBATCH_BATCH_TIMEOUT",
    "heartbeat_ttl_s": "REDBATCH_HEARTBEAT_TTL",
    "drain_timeout_s": "REDBATCH_DRAIN_TIMEOUT",
    "max_attempts": "REDBATCH_MAX_ATTEMPTS",
    "retry_on": "REDBATCH_RETRY_ON",
    "retry_delay_s": "REDBATCH_RETRY_DELAY",
    "interval_s": "REDBATCH_SCHEDULER_INTERVAL",
    "hung_margin_s": "REDBATCH_HUNG_MARGIN",
    "metrics_port": "REDBATCH_METRICS_PORT",
    "log_format": "REDBATCH_LOG_FORMAT",
    "cluster": "REDBATCH_CLUSTER",
}


def check_environment(environ: Mapping[str, str]) -> None:
    """Refuse ``REDBATCH_*`` variables nobody reads: they are typos or stale settings."""
    known = set(ENV_NAMES.values())
    unknown = sorted(k for k in environ if k.startswith(ENV_PREFIX) and k not in known)
    if unknown:
        raise ConfigError(
            f"unknown environment variable {unknown[0]} (known: {', '.join(sorted(known))})"
        )


# Settings whose command-line flag is not the setting's name with dashes.
_FLAGS = {
    "result_ttl_s": "--result-ttl",
    "batch_timeout_s": "--batch-timeout",
    "heartbeat_ttl_s": "--heartbeat-ttl",
    "drain_timeout_s": "--drain-timeout",
    "retry_delay_s": "--retry-delay",
    "interval_s": "--interval",
    "hung_margin_s": "--hung-margin",
    "queues": "QUEUE...",
}


def where(setting: str) -> str:
    flag = _FLAGS.get(setting, f"--{setting.replace('_', '-')}")
    return f"{flag} / {ENV_NAMES[setting]}"


def parse_sizes(text: str) -> tuple[int, ...]:
    """``"8,16 32"`` -> (8, 16, 32)."""
    try:
        return tuple(sorted({int(part) for part in text.replace(",", " ").split()}))
    except ValueError:
        raise ConfigError(
            f"preferred_batch_sizes must be whole numbers like 8,16,32, got {text!r}"
        ) from None


def parse_handler_options(text: str) -> tuple[tuple[str, str], ...]:
    """``"a=1 embed:b=x"`` (spaces or commas) -> (("a", "1"), ("embed:b", "x")); a
    ``QUEUE:`` prefix binds the option to that queue's handler only."""
    options = []
    for item in text.replace(",", " ").split():
        key, sep, value = item.partition("=")
        queue, _, name = key.rpartition(":")
        if not sep or not name.isidentifier() or (queue and not QUEUE_NAME.fullmatch(queue)):
            raise ConfigError(
                f"handler option {item!r} must look like name=value or QUEUE:name=value"
            )
        options.append((key, value))
    return tuple(options)


_INT_SETTINGS = frozenset(
    {
        "max_batch_size", "max_wait_ms", "max_batch_cost", "block_ms", "result_ttl_s",
        "priority_aging_ms", "target_latency_ms",
        "dead_maxlen", "max_payload_bytes", "batch_timeout_s", "heartbeat_ttl_s", "drain_timeout_s",
        "max_attempts", "hung_margin_s", "metrics_port",
    }
)  # fmt: skip
_FLOAT_SETTINGS = frozenset({"retry_delay_s", "interval_s"})


def words(raw: str) -> tuple[str, ...]:
    return tuple(raw.replace(",", " ").split())


_PARSERS: dict[str, Callable[[str], Any]] = {
    "queues": words,
    "handler": words,
    "retry_on": words,
    "preferred_batch_sizes": parse_sizes,
    "handler_options": parse_handler_options,
    "log_level": str.upper,
    "log_format": str.lower,
}


_CLUSTER_WORDS: dict[str, bool | None] = {
    "auto": None, "yes": True, "true": True, "1": True, "no": False, "false": False, "0": False,
}  # fmt: skip


def parse_cluster(raw: str) -> bool | None:
    """``REDBATCH_CLUSTER``: auto (ask the server), yes or no."""
    try:
        return _CLUSTER_WORDS[raw.strip().lower()]
    except KeyError:
        raise ConfigError(
            f"cluster must be auto, yes or no, got {raw!r} (--cluster/--no-cluster / "
            f"{ENV_NAMES['cluster']})"
        ) from None


def from_text(setting: str, raw: str) -> Any:
    if setting == "cluster":
        return parse_cluster(raw)  # None (auto) is a value here, not "unset"
    parser = _PARSERS.get(setting)
    if parser is not None:
        return parser(raw)
    if setting in _INT_SETTINGS:
        return _number(setting, raw, int, "an integer")
    if setting in _FLOAT_SETTINGS:
        return _number(setting, raw, float, "a number")
    return raw


def _number(setting: str, raw: str, kind: Callable[[str], Any], what: str) -> Any:
    try:
        return kind(raw)
    except ValueError:
        raise ConfigError(f"{setting} must be {what}, got {raw!r} ({where(setting)})") from None
