"""Worker configuration: environment, overrides, validation with readable messages."""

from __future__ import annotations

import pytest

from redbatch.config import WorkerConfig, check_environment, parse_handler_options
from redbatch.errors import ConfigError
from redbatch.transport.connection import DEFAULT_URL


def make(**overrides: object) -> WorkerConfig:
    settings: dict[str, object] = {"queues": ("echo",), "handler": "redbatch.handlers:echo"}
    return WorkerConfig.from_env({}, **(settings | overrides))


def test_defaults() -> None:
    config = make()
    assert (config.max_batch_size, config.max_wait_ms, config.block_ms) == (32, 2, 1000)
    assert config.redis_url == DEFAULT_URL  # the one default, documented in docs/configuration.md
    assert config.namespace == "rb"


def test_environment_then_overrides() -> None:
    env = {
        "REDBATCH_QUEUES": "a, b",
        "REDBATCH_HANDLER": "m:f",
        "REDBATCH_MAX_BATCH_SIZE": "8",
        "REDBATCH_HANDLER_OPTIONS": "seconds=0.1,per_item=2",
        "REDBATCH_LOG_LEVEL": "debug",
    }
    config = WorkerConfig.from_env(env, max_batch_size=16)
    assert config.queues == ("a", "b")
    assert config.max_batch_size == 16
    assert config.handler_options == (("seconds", "0.1"), ("per_item", "2"))
    assert config.log_level == "DEBUG"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"max_batch_size": -1}, "max_batch_size must be an integer from 1 to 4096"),
        ({"max_batch_size": 0}, "--max-batch-size / REDBATCH_MAX_BATCH_SIZE"),
        ({"max_wait_ms": -5}, "max_wait_ms"),
        ({"block_ms": 0}, "block_ms"),
        ({"redis_url": "http://x"}, "must start with redis://"),
        ({"redis_url": "redis://host:notaport/0"}, "invalid Redis URL"),
        ({"handler": "nocolon"}, "module:function"),
        ({"queues": ("bad name",)}, "invalid queue name"),
        ({"queues": ("a", "a")}, "listed twice"),
        ({"namespace": "a:b"}, "invalid namespace"),
        ({"log_level": "LOUD"}, "log_level"),
    ],
)
def test_invalid_values_name_the_setting(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("/", ".").replace("(", ".")):
        make(**overrides)


def test_non_integer_environment_value() -> None:
    env = {"REDBATCH_QUEUES": "a", "REDBATCH_HANDLER": "m:f", "REDBATCH_BLOCK_MS": "soon"}
    with pytest.raises(ConfigError, match="block_ms must be an integer, got 'soon'"):
        WorkerConfig.from_env(env)


def test_unknown_environment_variable_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown environment variable REDBATCH_MAX_BATCH_SZE"):
        check_environment({"REDBATCH_MAX_BATCH_SZE": "4", "PATH": "/bin"})


def test_missing_required_settings() -> None:
    with pytest.raises(ConfigError, match="missing setting handler"):
        WorkerConfig.from_env({}, queues=("a",))
    with pytest.raises(ConfigError, match="give at least one queue"):
        WorkerConfig.from_env({"REDBATCH_HANDLER": "m:f"}, queues=())


def test_handler_option_syntax() -> None:
    assert parse_handler_options("a=1 b=x=y") == (("a", "1"), ("b", "x=y"))
    with pytest.raises(ConfigError, match="name=value"):
        parse_handler_options("novalue")


def test_each_queue_gets_its_handler_and_the_options_meant_for_it() -> None:
    config = WorkerConfig(
        queues=("embed", "rerank"),
        handler=("pkg.mod:embed", "rerank=pkg.mod:rerank"),
        handler_options=(("device", "cpu"), ("rerank:top_k", "5")),
    )
    assert config.handler_for("embed") == ("pkg.mod:embed", (("device", "cpu"),))
    assert config.handler_for("rerank") == ("pkg.mod:rerank", (("device", "cpu"), ("top_k", "5")))


def test_handlers_from_the_environment() -> None:
    env = {"REDBATCH_QUEUES": "a b", "REDBATCH_HANDLER": "m:f b=m:g"}
    config = WorkerConfig.from_env(env)
    assert config.handler_for("a")[0] == "m:f"
    assert config.handler_for("b")[0] == "m:g"


@pytest.mark.parametrize(
    ("handler", "options", "message"),
    [
        (("a=m:f",), (), "no handler for queue b"),
        (("m:f", "m:g"), (), "two default handlers"),
        (("m:f", "c=m:g"), (), "does not serve"),
        (("m:f", "a=m:g", "a=m:h"), (), "repeated"),
        (("a=nocolon", "b=m:f"), (), "module:function"),
        (("m:f",), (("c:x", "1"),), "does not serve"),
    ],
)
def test_bad_handler_settings_are_refused(
    handler: tuple[str, ...], options: tuple[tuple[str, str], ...], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        WorkerConfig(queues=("a", "b"), handler=handler, handler_options=options)


def test_batching_settings_from_environment() -> None:
    env = {
        "REDBATCH_QUEUES": "a",
        "REDBATCH_HANDLER": "m:f",
        "REDBATCH_MAX_BATCH_COST": "512",
        "REDBATCH_PREFERRED_BATCH_SIZES": "16, 8,32",
    }
    config = WorkerConfig.from_env(env)
    assert config.max_batch_cost == 512
    assert config.preferred_batch_sizes == (8, 16, 32)


def test_preferred_sizes_must_fit_the_batch() -> None:
    with pytest.raises(ConfigError, match="preferred_batch_sizes"):
        make(max_batch_size=8, preferred_batch_sizes=(16,))
    with pytest.raises(ConfigError, match="whole numbers"):
        WorkerConfig.from_env(
            {
                "REDBATCH_QUEUES": "a",
                "REDBATCH_HANDLER": "m:f",
                "REDBATCH_PREFERRED_BATCH_SIZES": "x",
            }
        )
