"""A handler's optional warm_up hook: called once before serving, with the handler's options."""

from __future__ import annotations

import functools
from typing import Any

import pytest

from redbatch.errors import ConfigError
from redbatch.worker.loader import warm_up


def test_warm_up_gets_the_options_bound_to_the_handler() -> None:
    calls: list[dict[str, Any]] = []

    def handler(payloads: list[Any], device: str = "cpu") -> list[Any]:
        return payloads

    handler.warm_up = lambda **kw: calls.append(kw)  # type: ignore[attr-defined]
    warm_up(functools.partial(handler, device="cuda:1"))
    warm_up(handler)
    assert calls == [{"device": "cuda:1"}, {}]


def test_a_handler_without_warm_up_is_left_alone() -> None:
    warm_up(lambda payloads: payloads)


def test_a_failing_warm_up_is_a_configuration_error() -> None:
    def handler(payloads: list[Any]) -> list[Any]:
        return payloads

    def broken() -> None:
        raise RuntimeError("CUDA is not available")

    handler.warm_up = broken  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="warm-up failed: RuntimeError: CUDA is not available"):
        warm_up(handler)
