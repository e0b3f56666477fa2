"""``Final``: what a streaming (generator) handler yields to end one item with its result."""

from __future__ import annotations

from typing import Any


class Final:
    """Ends one item of a streaming batch: yield ``Final(value)`` at the item's position and
    ``value`` becomes its result; later positions of that item are ignored.

    Without it, an item ends when the generator returns, with the list of its chunks."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"Final({self.value!r})"
