"""The dashboard's Redis work, all through ``redbatch.ops``: status collection, ``inspect``'s
search and ``dlq``'s list, show, replay and purge. Blocking calls (redis-py's sync client,
as the commands use): the web app runs them on its thread pool.

Refreshing is lazy: a page asks every couple of seconds and gets the last sample while it is
younger than half the refresh interval, so any number of open pages cost one refresh per
interval, and nothing runs while no page is open.

A sample is what ``redbatch status`` shows by default: the totals over every queue and the
details of the served or marked ones plus the ``status.SUMMARY_ROWS`` holding most (the same
constant: /api/status is the document ``status --json`` prints; with 10,000 idle queues,
reading each in detail would take seconds per refresh). Every queue (``every``) or
those whose name holds a text (``match``) are read when a page asks, not cached.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import redis

from redbatch.clock import now_ms
from redbatch.dashboard import overview
from redbatch.errors import ConfigError
from redbatch.ops import status
from redbatch.ops.dlq import letters as dead_letters
from redbatch.ops.inspect import find as inspect_find
from redbatch.ops.inspect import view as inspect_view
from redbatch.ops.status import Snapshot
from redbatch.protocol import stats
from redbatch.protocol.keys import KeySpace, logical_name
from redbatch.transport.connection import Client

# Dead letters a page lists at most (the newest); ``redbatch dlq list --limit`` for more.
MAX_LETTERS = 500
MAX_MATCH_CHARS = 200


@dataclass
class Sample:
    """One refresh: the status snapshot and the page's document built from it."""

    taken: float  # monotonic
    snapshot: Snapshot
    document: dict[str, Any]
    busy: dict[str, float | None]  # each worker's busy ratio


class Source:
    def __init__(
        self,
        client: Client,
        keyspace: KeySpace,
        interval_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        # ``ops`` annotates the single-node client; a cluster client takes the same calls
        # (each names keys of one queue, one hash slot; its pipelines split by node).
        self._ops = cast(redis.Redis, client)
        self._keyspace = keyspace
        self._interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._sample: Sample | None = None
        self._history = overview.History()
        self._busy = overview.BusyRatios()

    # -- queues, workers, charts -----------------------------------------------------------

    def sample(self) -> Sample:
        """The latest sample, refreshed when it is older than half the interval."""
        with self._lock:
            fresh = self._sample
            if fresh is None or time.monotonic() - fresh.taken >= self._interval_s / 2:
                fresh = self._sample = self._refresh()
            return fresh

    def _refresh(self) -> Sample:
        now = self._clock()
        snapshot = status.collect(self._client, self._keyspace, now, limit=status.SUMMARY_ROWS)
        reads = self._read_slots([q.name for q in snapshot.queues], now)
        for (queue, slot), counts in reads.slots.items():
            self._history.update(queue, slot, counts)
        self._history.prune({logical_name(q.name) for q in snapshot.queues}, now)
        busy = self._busy.observe(snapshot.time_ms, snapshot.workers)
        document = overview.document(snapshot, reads, self._history, busy, now)
        return Sample(time.monotonic(), snapshot, document, busy)

    def _listed(self, match: str | None) -> dict[str, Any]:
        """The overview of every queue, or of those whose name holds ``match``, read now;
        busy ratios from the latest sample (two reads close together cannot give one)."""
        busy = self.sample().busy
        now = self._clock()
        only = None if match is None else (lambda name: match in logical_name(name))
        snapshot = status.collect(self._client, self._keyspace, now, only=only)
        reads = self._read_slots([q.name for q in snapshot.queues], now)
        with self._lock:
            for (queue, slot), counts in reads.slots.items():
                self._history.update(queue, slot, counts)
            return overview.document(snapshot, reads, self._history, busy, now)

    def _read_slots(self, physical: list[str], now: float) -> overview.SlotReads:
        """Each physical queue's and each queue's last minute, and each queue's slots (the
        statistics of its shards merged)."""
        slots = overview.read_slots(now)
        last_minute = set(stats.window_slots(now))
        pipe = self._client.pipeline(transaction=False)
        for name in physical:
            keys = self._keyspace.queue(name)
            for slot in slots:
                pipe.hgetall(keys.stats(slot))
        replies = iter(pipe.execute())
        reads = overview.SlotReads()
        recent: dict[str, list[Any]] = {}
        by_slot: dict[tuple[str, int], list[Any]] = {}
        for name in physical:
            queue = logical_name(name)
            mine = [(slot, next(replies) or {}) for slot in slots]
            minute = [found for slot, found in mine if slot in last_minute]
            reads.physical[name] = stats.merge(minute)
            recent.setdefault(queue, []).extend(minute)
            for slot, found in mine:
                by_slot.setdefault((queue, slot), []).append(found)
        reads.logical = {queue: stats.merge(found) for queue, found in recent.items()}
        reads.slots = {key: stats.merge(found) for key, found in by_slot.items()}
        return reads

    def overview(self, every: bool = False, match: str | None = None) -> dict[str, Any]:
        """The page's document: the summary (the latest sample), or with ``every`` all
        queues, or with ``match`` the queues whose name holds it."""
        if match is not None and len(match) > MAX_MATCH_CHARS:
            raise ConfigError(f"the search text is longer than {MAX_MATCH_CHARS} characters")
        if every or match:
            return self._listed(match or None)
        return self.sample().document

    def status(self, every: bool = False) -> dict[str, Any]:
        """Exactly what ``redbatch status --json`` prints (``every``: with ``--all``)."""
        if every:
            return status.to_json(status.collect(self._client, self._keyspace, self._clock()))
        return status.to_json(self.sample().snapshot)

    # -- one request ----------------------------------------------------------------------

    def find(self, request_id: str, queue: str | None) -> dict[str, Any]:
        """What ``redbatch inspect ID --json`` prints, plus ``lines``: its text output."""
        queues, found = inspect_find.find_everywhere(self._ops, self._keyspace, request_id, queue)
        now = now_ms()
        lines: list[str] = []
        shown = None
        for sighting in found:
            if sighting["queue"] != shown:
                shown = sighting["queue"]
                lines.append(f"request {request_id} in queue {shown}:")
            lines += inspect_view.sighting_lines(sighting, now)
        return {"request_id": request_id, "queues": queues, "found": found, "lines": lines}

    # -- dead letters ---------------------------------------------------------------------

    def dead_letters(self, queue: str, limit: int) -> dict[str, Any]:
        """What ``redbatch dlq QUEUE list --json`` prints."""
        total, entries = dead_letters.newest_letters(
            self._ops, self._keyspace, queue, min(limit, MAX_LETTERS)
        )
        return {"queue": queue, "total": total, "entries": entries}

    def dead_letter(self, queue: str, ident: str) -> dict[str, Any]:
        """What ``redbatch dlq QUEUE show ID --json`` prints; each letter also has
        ``payload_lines``, the payload as the command prints it."""
        letters = dead_letters.find_letters(self._ops, self._keyspace, queue, ident)
        for letter in letters:
            view = letter["payload"]
            letter["payload_lines"] = (
                inspect_view.payload_lines(view) if view is not None else ["no payload field"]
            )
        return {"queue": queue, "dead_letters": letters}

    def replay(self, queue: str, idents: list[str] | None) -> dict[str, Any]:
        """``redbatch dlq QUEUE replay ID... --json`` (``idents`` None: ``--all``)."""
        if idents is None:
            results = dead_letters.replay_every(self._ops, self._keyspace, queue, now_ms)
        else:
            results = dead_letters.replay_letters(self._ops, self._keyspace, queue, idents, now_ms)
        done = sum(1 for r in results if r.outcome == dead_letters.REPLAYED)
        return {"queue": queue, "replayed": done, "results": [r.as_dict() for r in results]}

    def purge(self, queue: str) -> dict[str, Any]:
        """``redbatch dlq QUEUE purge --yes --json``: the dead letters there are now."""
        plan = dead_letters.purge_plan(self._ops, self._keyspace, queue)
        return {"queue": queue, "purged": dead_letters.purge_planned(self._ops, plan)}
