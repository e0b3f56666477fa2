"""The scheduler's Redis I/O for one queue: reap dead or hung consumers, move due delayed
retries, remove consumers nobody runs. A queue is all of its priority lanes (streams, each
with its group): reaping and consumer clean-up cover every lane, delayed retries go back to
the lane they came from.

Decisions are made by the pure functions of ``reaper``; every change to a queue goes through a
Lua script that re-checks its precondition atomically, so several schedulers may run at once:
an entry another scheduler (or the worker itself) dealt with first is skipped, not doubled.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

import redis

from redbatch import clock
from redbatch.config import SchedulerConfig
from redbatch.logconfig import request_ids
from redbatch.protocol.keys import GROUP, PRIORITIES, QueueKeys
from redbatch.protocol.scripts import (
    RETRY,
    Scripts,
    followers_of,
    move_due_args,
    remove_consumer_args,
    requeue_args,
)
from redbatch.scheduler import reaper
from redbatch.scheduler.reaper import Action, PendingEntry, Verdict
from redbatch.transport.connection import Client

log = logging.getLogger(__name__)

# Entries per XPENDING page and per requeue.lua call: bounds one script's run time and the
# memory of the entries read back (XRANGE returns payloads too).
PAGE = 500
# Delayed retries moved per move_due.lua call, and calls per queue per pass: a backlog drains
# over a few passes without one queue holding the loop.
MOVE_BATCH = 500
MOVE_CALLS_PER_PASS = 20


# Why the scheduler re-queued entries (a short, fixed set: it is a metric label).
DEAD_WORKER, HUNG_WORKER, DUE_RETRY = "dead_worker", "hung_worker", "retry"
_REASON = {Action.REQUEUE_ALL: DEAD_WORKER, Action.REQUEUE_HUNG: HUNG_WORKER}


class Tally(Protocol):
    """Told what the duties changed, as they change it (the scheduler's metrics)."""

    def requeued(self, queue: str, reason: str, count: int) -> None: ...

    def dead_lettered(self, queue: str, count: int) -> None: ...


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _missing(exc: redis.ResponseError) -> bool:
    """The stream or its group is gone (deleted by an operator); the worker recreates it."""
    message = str(exc)
    return message.startswith("NOGROUP") or "no such key" in message.lower()


def _per_lane(replies: list[Any]) -> dict[str, Any]:
    """Pipeline replies of one command per lane (in ``PRIORITIES`` order), by priority; a lane
    whose stream or group is missing is left out, any other error is raised."""
    found: dict[str, Any] = {}
    for priority, reply in zip(PRIORITIES, replies, strict=True):
        if isinstance(reply, redis.ResponseError):
            if _missing(reply):
                continue
            raise reply
        if isinstance(reply, Exception):
            raise reply
        found[priority] = reply
    return found


class Upkeep:
    """Per-queue duties on one client; every method is safe to run from several schedulers."""

    def __init__(
        self,
        client: Client,
        config: SchedulerConfig,
        *,
        now_ms: Callable[[], int] = clock.now_ms,
        remove_after_idle_ms: int = reaper.REMOVE_AFTER_IDLE_MS,
        tally: Tally | None = None,
    ) -> None:
        self._client = client
        self._tally = tally
        self._config = config
        self._scripts = Scripts(client)
        self._now_ms = now_ms
        self._remove_after_idle_ms = remove_after_idle_ms

    def _now(self) -> int:
        """Now, on Redis's clock (read again when stale) unless a test gave its own."""
        clock.SERVER.refresh(self._client)
        return self._now_ms()

    # -- dead and hung consumers ------------------------------------------------------------

    def reap(self, keys: QueueKeys) -> None:
        """Re-queue (or dead-letter) what dead consumers hold and what hung ones held too long,
        in every lane (each entry back into its own lane)."""
        pipe = self._client.pipeline(transaction=False)
        for priority in PRIORITIES:
            pipe.xpending(keys.stream_for(priority), GROUP)
        summaries: dict[str, dict[str, Any]] = _per_lane(pipe.execute(raise_on_error=False))
        holders: dict[str, dict[str, int]] = {}  # lane -> consumer -> pending there
        for priority, summary in summaries.items():
            lane = {
                _text(c["name"]): int(c["pending"])
                for c in summary.get("consumers") or []
                if int(c["pending"]) > 0
            }
            if lane:
                holders[priority] = lane
        if not holders:
            return
        names = sorted({name for lane in holders.values() for name in lane})
        heartbeats = self._heartbeats(keys, names)
        for priority, lane in holders.items():
            for name, pending in lane.items():
                verdict = reaper.judge(
                    name, pending, heartbeats[name], hung_margin_s=self._config.hung_margin_s
                )
                if verdict.action is not Action.NOTHING:
                    self._reap_consumer(keys, priority, name, verdict)

    def _heartbeats(
        self, keys: QueueKeys, names: list[str]
    ) -> dict[str, reaper.HeartbeatSeen | None]:
        pipe = self._client.pipeline(transaction=False)
        for name in names:
            pipe.exists(keys.worker(name))
            pipe.hget(keys.worker(name), reaper.BATCH_TIMEOUT_FIELD)
        replies = pipe.execute()
        return {
            name: reaper.parse_heartbeat(bool(replies[2 * i]), replies[2 * i + 1])
            for i, name in enumerate(names)
        }

    def _reap_consumer(self, keys: QueueKeys, priority: str, name: str, verdict: Verdict) -> None:
        """Page through what ``name`` holds in one lane (oldest first), handing each page to
        requeue.lua."""
        stream = keys.stream_for(priority)
        start = "-"
        # IDLE filters on the server: a hung worker's fresh entries are never even read.
        idle = verdict.min_idle_ms if verdict.action is Action.REQUEUE_HUNG else None
        while True:
            rows = self._client.xpending_range(
                stream, GROUP, start, "+", PAGE, consumername=name, idle=idle
            )
            if not rows:
                return
            page = [
                PendingEntry(_text(r["message_id"]), int(r["time_since_delivered"])) for r in rows
            ]
            chosen = reaper.select(verdict, page)
            if chosen:
                self._requeue(keys, priority, name, chosen, verdict)
            if len(rows) < PAGE:
                return
            start = f"({page[-1].entry_id}"  # exclusive: the next page starts after this id

    def _requeue(
        self, keys: QueueKeys, priority: str, name: str, entry_ids: list[str], verdict: Verdict
    ) -> None:
        reason = verdict.reason
        # requeue.lua needs each entry's result and reply keys in KEYS (cluster-safe), so read
        # the entries' id and reply first; an entry whose record is gone is passed all the same.
        pipe = self._client.pipeline(transaction=False)
        for entry_id in entry_ids:
            pipe.xrange(keys.stream_for(priority), entry_id, entry_id)
        records = pipe.execute()
        held = [
            reaper.held(entry_id, found[0][1] if found else None)
            for entry_id, found in zip(entry_ids, records, strict=True)
        ]
        script_keys, args = requeue_args(
            keys,
            name,
            held,
            mode=RETRY,
            max_attempts=self._config.max_attempts,
            ttl_ms=self._config.result_ttl_s * 1000,
            dead_maxlen=self._config.dead_maxlen,
            now_ms=self._now(),
            reason=reason,
            priority=priority,
        )
        counts = self._scripts.requeue(keys=script_keys, args=args)
        requeued, dead, skipped = (int(n) for n in counts[:3])
        if len(counts) > 3:
            own = {h.request_id: h.reply for h in held if h.request_id}
            followers = followers_of(counts[3:], own)
            self._scripts.tell_followers(keys, followers, ttl_ms=self._config.result_ttl_s * 1000)
        if self._tally is not None:
            self._tally.requeued(keys.name, _REASON[verdict.action], requeued)
            self._tally.dead_lettered(keys.name, dead)
        if requeued or dead:
            log.info(
                "queue %s (%s): re-queued %d, dead-lettered %d, skipped %d held by %s: %s",
                keys.name, priority, requeued, dead, skipped, name, reason,
                extra={
                    "event": "entries_requeued", "queue": keys.name, "worker": name,
                    "priority": priority, "requeued": requeued, "dead_lettered": dead,
                    "skipped": skipped, "reason": reason,
                    **request_ids([h.request_id for h in held if h.request_id]),
                },
            )  # fmt: skip
        else:
            log.debug(
                "queue %s (%s): %d entries of %s already handled",
                keys.name,
                priority,
                skipped,
                name,
                extra={"event": "entries_already_handled", "queue": keys.name, "worker": name},
            )

    # -- delayed retries ----------------------------------------------------------------------

    def move_due(self, keys: QueueKeys) -> int:
        """Move delayed retries whose time has come into their lanes; returns how many."""
        moved = 0
        for _ in range(MOVE_CALLS_PER_PASS):
            script_keys, args = move_due_args(
                keys, now_ms=self._now(), limit=MOVE_BATCH, dead_maxlen=self._config.dead_maxlen
            )
            count, dead = self._scripts.move_due(keys=script_keys, args=args)
            moved += int(count)
            if self._tally is not None:
                self._tally.requeued(keys.name, DUE_RETRY, int(count))
                self._tally.dead_lettered(keys.name, int(dead))
            if dead:
                log.warning(
                    "queue %s: dead-lettered %d unreadable delayed retries",
                    keys.name,
                    dead,
                    extra={"event": "retries_dead_lettered", "queue": keys.name},
                )
            if int(count) + int(dead) < MOVE_BATCH:
                break
        if moved:
            log.debug(
                "queue %s: moved %d due retries to their lanes",
                keys.name,
                moved,
                extra={"event": "retries_moved", "queue": keys.name, "count": moved},
            )
        return moved

    # -- consumer clean-up --------------------------------------------------------------------

    def remove_consumers(self, keys: QueueKeys) -> int:
        """Delete group consumers that hold nothing in any lane and have no heartbeat (from
        every lane's group at once); returns how many."""
        pipe = self._client.pipeline(transaction=False)
        for priority in PRIORITIES:
            pipe.xinfo_consumers(keys.stream_for(priority), GROUP)
        lanes: dict[str, list[dict[str, Any]]] = _per_lane(pipe.execute(raise_on_error=False))
        # A consumer's pending count over all lanes, and its most recent interaction in any.
        seen: dict[str, tuple[int, int]] = {}
        for infos in lanes.values():
            for info in infos:
                name, pending, idle = _text(info["name"]), int(info["pending"]), int(info["idle"])
                before = seen.get(name)
                if before is not None:
                    pending, idle = pending + before[0], min(idle, before[1])
                seen[name] = (pending, idle)
        candidates = [(name, pending, idle) for name, (pending, idle) in sorted(seen.items())]
        pipe = self._client.pipeline(transaction=False)
        for name, _pending, _idle in candidates:
            pipe.exists(keys.worker(name))
        alive = pipe.execute() if candidates else []
        removed = 0
        for (name, pending, idle), has_heartbeat in zip(candidates, alive, strict=True):
            if not reaper.removable(
                pending, bool(has_heartbeat), idle, min_idle_ms=self._remove_after_idle_ms
            ):
                continue
            # The script re-checks heartbeat and pending in one step: DELCONSUMER would drop
            # anything the consumer read meanwhile out of every scheduler's reach.
            script_keys, args = remove_consumer_args(keys, name)
            if self._scripts.remove_consumer(keys=script_keys, args=args):
                removed += 1
                log.info(
                    "queue %s: removed consumer %s (no heartbeat, holds nothing)",
                    keys.name,
                    name,
                    extra={"event": "consumer_removed", "queue": keys.name, "worker": name},
                )
        return removed
