"""A small streaming text generator that runs anywhere: a word-level bigram (Markov) model
built at warm-up from a few of Aesop's fables (Townsend's 1867 translation, public domain)
shipped in the package. No dependencies; for demos and CI, not for prose.

``generate`` is a streaming handler: each step yields one word per item (a chunk) and ends an
item with ``Final(text)`` at the end of a sentence or after ``max_tokens`` words.

    redbatch worker story --handler redbatch.models.bigram:generate \\
        --handler-option step_s=0.05
"""

from __future__ import annotations

import itertools
import random
import time
import zlib
from collections.abc import Iterator, Sequence
from importlib import resources
from typing import Any

from redbatch.final import Final

# The model: word -> the words that follow it in the text (with repeats: their frequency).
_state: dict[str, dict[str, list[str]]] = {}
_MIN_WORDS = 6  # a sentence may end after this many words


def build(text: str) -> dict[str, list[str]]:
    """The bigram table of ``text``: each word's followers, in order of appearance."""
    words = text.split()
    table: dict[str, list[str]] = {}
    for word, following in itertools.pairwise(words):
        table.setdefault(word.lower(), []).append(following)
    return table


def _load() -> dict[str, list[str]]:
    if "table" not in _state:
        text = resources.files("redbatch.models").joinpath("data", "aesop.txt").read_text("utf-8")
        _state["table"] = build(text)
    return _state["table"]


def warm_up(**options: Any) -> None:
    _load()


class _Writer:
    """One item's generation: seeded by its prompt, so a prompt always gives the same text."""

    def __init__(self, prompt: str, table: dict[str, list[str]], max_tokens: int) -> None:
        self.rng = random.Random(zlib.crc32(prompt.encode()))
        self.table = table
        self.words: list[str] = []
        self.last = (prompt.split() or ["the"])[-1].lower()
        self.max_tokens = max_tokens

    def step(self) -> Any:
        followers = self.table.get(self.last) or self.table["the"]
        word = self.rng.choice(followers)
        self.words.append(word)
        self.last = word.lower()
        ended = word.endswith(".") and len(self.words) >= _MIN_WORDS
        if ended or len(self.words) >= self.max_tokens:
            return Final(" ".join(self.words))
        return word + " "


def generate(
    prompts: list[str],
    requests: Sequence[Any] = (),
    max_tokens: int | str = 24,
    step_s: float | str = 0.0,
) -> Iterator[list[Any]]:
    """Stream one word per item and step; ``step_s`` seconds per step stand for a model's
    forward pass. An item whose request was cancelled gets nothing more."""
    table = _load()
    writers = [_Writer(str(p), table, int(max_tokens)) for p in prompts]
    running = [True] * len(prompts)
    while any(running):
        if float(step_s):
            time.sleep(float(step_s))
        step: list[Any] = []
        for i, writer in enumerate(writers):
            if running[i] and requests and requests[i].cancelled():
                running[i] = False
            value = writer.step() if running[i] else None
            if isinstance(value, Final):
                running[i] = False
            step.append(value)
        yield step


generate.warm_up = warm_up  # type: ignore[attr-defined]
