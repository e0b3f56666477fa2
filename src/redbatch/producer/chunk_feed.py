"""The chunks of one streaming request, put in order for its ``stream()`` (pure: no I/O, no
locks; the handles guard it).

Chunks may arrive twice (a reply push and a read of the kept chunks), out of order (a read
of the kept chunks racing a push), or from two attempts (a worker killed mid-stream: the
request runs again from ``seq`` 0). The feed hands each chunk of an attempt out once, in
``seq`` order, and never mixes attempts: a newer attempt's first chunk, once the caller has
seen an older attempt's, is announced as a restart (``resume="raise"``, the default: the
caller resets) or handed on (``resume="restart"``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from redbatch.errors import ConfigError
from redbatch.protocol.chunks import Chunk

RAISE, RESTART = "raise", "restart"
RESUME_MODES = (RAISE, RESTART)


def check_resume(resume: str) -> str:
    if resume not in RESUME_MODES:
        raise ConfigError(f"resume must be one of {', '.join(RESUME_MODES)}, got {resume!r}")
    return resume


class Restarted:
    """What ``take`` answers when the next chunk starts a newer attempt than the caller saw."""

    __slots__ = ("attempt",)

    def __init__(self, attempt: int) -> None:
        self.attempt = attempt


class Ended:
    """What ``take`` answers at an item's end mark: no more chunks of this attempt."""

    __slots__ = ()


ENDED = Ended()


class ChunkFeed:
    __slots__ = ("_ahead", "_attempt", "_next_seq", "_ready", "cancelled", "seen")

    def __init__(self) -> None:
        self._attempt = 0  # the attempt being collected (0: none yet)
        self._next_seq = 0
        self._ready: deque[Chunk] = deque()
        self._ahead: dict[int, Chunk] = {}  # arrived before a chunk they follow
        # (attempt, seq) of the last chunk handed to the caller; (0, -1) none yet.
        self.seen = (0, -1)
        self.cancelled = False  # cancelled locally: no more chunks are handed out

    def resume_after(self, position: tuple[int, int]) -> None:
        """Start after ``position`` ((attempt, seq) a reader already has; (0, -1): none)."""
        attempt, seq = position
        if attempt > 0:
            self._attempt, self._next_seq = attempt, seq + 1
        self.seen = position

    def offer(self, chunks: Iterable[Chunk]) -> None:
        for chunk in chunks:
            self._offer(chunk)

    def _offer(self, chunk: Chunk) -> None:
        if chunk.attempt < self._attempt or chunk.attempt < self.seen[0]:
            return  # an older attempt's: it will not end
        if chunk.attempt > self._attempt:
            # A newer attempt: what the old one left unread is dropped with it.
            self._attempt, self._next_seq = chunk.attempt, 0
            self._ready.clear()
            self._ahead.clear()
        if chunk.seq < self._next_seq or chunk.seq in self._ahead:
            return  # seen already
        if (chunk.attempt, chunk.seq) <= self.seen:
            return  # handed out before (the caller reads kept chunks after a position)
        self._ahead[chunk.seq] = chunk
        while self._next_seq in self._ahead:
            self._ready.append(self._ahead.pop(self._next_seq))
            self._next_seq += 1

    @property
    def at_end(self) -> bool:
        """Every chunk of the attempt was handed out, and its end mark is next."""
        return bool(self._ready) and self._ready[0].end

    def take(self, resume: str) -> Chunk | Restarted | Ended | None:
        """The next chunk for the caller, a restart to announce first, the end of the
        attempt's chunks (``ENDED``, again on every later call), or None for now."""
        if self.cancelled or not self._ready:
            return None
        chunk = self._ready[0]
        if self.seen[0] and chunk.attempt > self.seen[0] and resume == RAISE:
            self.seen = (chunk.attempt, -1)  # announced once; a new stream() reads it from 0
            return Restarted(chunk.attempt)
        if chunk.end:
            self.seen = (chunk.attempt, chunk.seq - 1)
            return ENDED  # left in place: the end stays the end
        self._ready.popleft()
        self.seen = (chunk.attempt, chunk.seq)
        return chunk
