"""Pure decisions of the reaper: which held entries go back to the stream, which consumers go.

No Redis and no clock here: the service reads the facts (pending counts, heartbeats, idle
times, all in ms as Redis reports them) and these functions say what to do with them.

A consumer with pending entries and no heartbeat is dead: everything it holds is re-queued
at once. A consumer whose heartbeat exists is alive, yet may be hung in a batch it can never
finish; its entries are re-queued only once they have been pending longer than the worker's
own ``batch_timeout`` (from its heartbeat) plus the scheduler's ``hung_margin``.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from redbatch.protocol.records import BEAT_BATCH_TIMEOUT
from redbatch.protocol.scripts import held_entry

# What requeue.lua needs about one pending entry (shared with the worker's pending audit).
held = held_entry

# WorkerConfig's default: used when a heartbeat lacks a readable batch_timeout.
DEFAULT_BATCH_TIMEOUT_S = 300
BATCH_TIMEOUT_FIELD = BEAT_BATCH_TIMEOUT.encode()
# A consumer that holds nothing and has no heartbeat is removed only after this long without
# interaction, so a worker in the instant between its first read and first heartbeat keeps it.
# (remove_consumer.lua re-checks heartbeat and pending atomically.)
REMOVE_AFTER_IDLE_MS = 3000


class Action(enum.Enum):
    NOTHING = "nothing"
    REQUEUE_ALL = "requeue_all"  # dead: no heartbeat
    REQUEUE_HUNG = "requeue_hung"  # alive, but some entries are held past batch_timeout


@dataclass(frozen=True, slots=True)
class HeartbeatSeen:
    """What the reaper needs from a live worker's heartbeat hash."""

    batch_timeout_s: int = DEFAULT_BATCH_TIMEOUT_S


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do with one consumer; ``min_idle_ms`` applies to REQUEUE_HUNG."""

    action: Action
    reason: str = ""
    min_idle_ms: int = 0


@dataclass(frozen=True, slots=True)
class PendingEntry:
    """One XPENDING row: an entry held by a consumer and for how long (ms)."""

    entry_id: str
    idle_ms: int


NOTHING = Verdict(Action.NOTHING)


def parse_heartbeat(exists: bool, batch_timeout: bytes | None) -> HeartbeatSeen | None:
    """The heartbeat from its key's existence and raw ``batch_timeout`` field (seconds)."""
    if not exists:
        return None
    try:
        seconds = int(batch_timeout or b"")
    except ValueError:
        return HeartbeatSeen()
    return HeartbeatSeen(seconds if seconds > 0 else DEFAULT_BATCH_TIMEOUT_S)


def judge(
    consumer: str, pending: int, heartbeat: HeartbeatSeen | None, *, hung_margin_s: int
) -> Verdict:
    """Decide from the pending summary and the heartbeat what to do with ``consumer``."""
    if pending <= 0:
        return NOTHING
    if heartbeat is None:
        return Verdict(Action.REQUEUE_ALL, f"worker {consumer} died (no heartbeat) holding it")
    limit_s = heartbeat.batch_timeout_s + hung_margin_s
    return Verdict(
        Action.REQUEUE_HUNG,
        f"held past batch_timeout by {consumer} "
        f"({heartbeat.batch_timeout_s} s + {hung_margin_s} s margin)",
        min_idle_ms=limit_s * 1000,
    )


def select(verdict: Verdict, entries: Sequence[PendingEntry]) -> list[str]:
    """The entry ids to re-queue among ``entries`` (one page of the consumer's XPENDING)."""
    if verdict.action is Action.REQUEUE_ALL:
        return [e.entry_id for e in entries]
    if verdict.action is Action.REQUEUE_HUNG:
        return [e.entry_id for e in entries if e.idle_ms > verdict.min_idle_ms]
    return []


def removable(pending: int, has_heartbeat: bool, idle_ms: int, *, min_idle_ms: int) -> bool:
    """Whether a group consumer may be deleted (it holds nothing and nobody runs it)."""
    return pending == 0 and not has_heartbeat and idle_ms > min_idle_ms
