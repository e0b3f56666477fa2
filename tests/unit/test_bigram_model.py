"""redbatch.models.bigram: the streaming example model, stepped without a worker."""

from __future__ import annotations

from typing import Any

from redbatch import Final
from redbatch.models import bigram


class Info:
    def __init__(self, cancelled: bool = False) -> None:
        self._cancelled = cancelled

    def cancelled(self) -> bool:
        return self._cancelled


def run(prompts: list[str], requests: Any = (), **options: Any) -> list[list[Any]]:
    bigram.warm_up()
    return list(bigram.generate(prompts, requests, **options))


def test_each_item_streams_words_then_ends_with_its_text_and_a_prompt_gives_one_text() -> None:
    steps = run(["The fox", "A lion"], max_tokens=10)
    for i in range(2):
        values = [step[i] for step in steps]
        finals = [v for v in values if isinstance(v, Final)]
        assert len(finals) == 1
        words = values[: values.index(finals[0])]
        assert all(isinstance(w, str) and w.endswith(" ") for w in words)
        assert finals[0].value.startswith("".join(words))  # the text: the words, then the last
        assert len(finals[0].value.split()) <= 10
        assert all(v is None for v in values[values.index(finals[0]) + 1 :])
    again = run(["The fox", "A lion"], max_tokens=10)
    assert [repr(s) for s in again] == [repr(s) for s in steps]


def test_a_cancelled_item_gets_nothing_more() -> None:
    steps = run(["The fox", "A lion"], [Info(cancelled=True), Info()], max_tokens=5)
    assert all(step[0] is None for step in steps)
    assert isinstance(steps[-1][1], Final)
