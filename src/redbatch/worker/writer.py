"""Records a batch's outcomes: one Lua call writes every result hash (write-once, with TTL),
pushes each producer's replies, dead-letters malformed entries, and XACKs + XDELs the entries,
so the stream does not grow with processed requests.

A batch may mix priority lanes (streams) of its queue: then it is one call per lane, each
acking in the stream its entries were read from (``RawEntry.priority``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import redis

from redbatch.clock import now_ms
from redbatch.protocol.fields import (
    DEAD,
    Outcome,
    Request,
    bounded_copy,
    entry_key,
    entry_request_id,
    result_fields,
)
from redbatch.protocol.finish_args import Finished, finish_batch_args
from redbatch.protocol.keys import PRIORITIES, KeySpace, QueueKeys
from redbatch.protocol.scripts import (
    HANDBACK,
    RETRY,
    RequeueItem,
    Scripts,
    delayed_member,
    followers_of,
    held_entry,
    remove_consumer_args,
    requeue_args,
)
from redbatch.transport.connection import Client
from redbatch.transport.deferred import deferred_for
from redbatch.transport.topology import topology_of
from redbatch.worker.executor import Ran
from redbatch.worker.reader import RawEntry

# A retry never waits longer than this, however many attempts came before.
MAX_RETRY_DELAY_S = 3600.0


def retry_due_ms(attempt: int, delay_s: float | None, base_s: float, now: int) -> int:
    """When attempt ``attempt + 1`` may run: the delay doubles with every attempt."""
    first = base_s if delay_s is None else delay_s
    wait = min(MAX_RETRY_DELAY_S, first * 2.0 ** (attempt - 1))
    return now + max(1, round(wait * 1000))


@dataclass
class Sending:
    """finish_batch calls sent for one batch (one per lane), whose replies are unread."""

    keys: QueueKeys
    # Per call: its long-form items, its short-form (request, outcome) pairs, KEYS, ARGV.
    calls: list[
        tuple[list[Finished], list[tuple[Request, Outcome]], list[str], list[bytes | str | int]]
    ] = field(default_factory=list)
    # Replies already read (a cluster client's calls wait for theirs), in call order.
    replies: list[Any] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Malformed:
    """An entry that broke the wire contract, with the reason it is dead-lettered."""

    entry: RawEntry
    reason: str


class Writer:
    def __init__(
        self,
        client: Client,
        keyspace: KeySpace,
        worker_name: str,
        *,
        result_ttl_s: int,
        dead_maxlen: int,
        max_attempts: int = 3,
        retry_delay_s: float = 1.0,
    ) -> None:
        self._client = client
        self._topology = topology_of(client)
        self._scripts = Scripts(client)
        # Replies read a batch later, on a connection of our own; None on a cluster, where
        # every call waits for its reply.
        self._deferred = deferred_for(client)
        self._keyspace = keyspace
        self._worker = worker_name
        self._ttl_ms = result_ttl_s * 1000
        self._dead_maxlen = dead_maxlen
        self._max_attempts = max_attempts
        self._retry_delay_s = retry_delay_s

    def finish(
        self,
        queue: str,
        ran: list[Ran],
        malformed: list[Malformed],
        raw: dict[str, RawEntry],
    ) -> int:
        """Write one queue's outcomes and wait for Redis; returns how many results already
        existed (``send`` then ``settle``)."""
        return self.settle(self.send(queue, ran, malformed, raw))

    def send(
        self,
        queue: str,
        ran: list[Ran],
        malformed: list[Malformed],
        raw: dict[str, RawEntry],
    ) -> Sending:
        """Send one queue's outcomes without waiting for Redis; ``settle`` reads the replies.

        One finish_batch call per lane the batch's entries were read from (highest first),
        each with that lane's stream. ``raw`` holds the entries as read, keyed by
        ``entry_key(entry.priority, entry.entry_id)`` (entry ids repeat across lanes), with
        each ``ran`` request parsed with ``lane=entry.priority``; keyed by entry id alone it
        works only while a batch holds no two entries with the same id."""
        keys: QueueKeys = self._keyspace.queue(queue)
        lanes: dict[str, list[Finished]] = {p: [] for p in PRIORITIES}
        short: dict[str, list[tuple[Request, Outcome]]] = {p: [] for p in PRIORITIES}
        # A batch's requests share worker, start, end and batch size: sent once per call.
        common: dict[str, str | int] = {}
        start = end = size = 0
        if ran:
            first = ran[0]
            start, end, size = first.start, first.end, first.batch
            common = {"worker": self._worker, "start": start, "end": end, "batch": size}
        for r in ran:
            request = r.request
            odd_times = r.start != start or r.end != end or r.batch != size
            if r.retry or r.outcome.status == DEAD or odd_times:
                entry = _raw_entry(raw, request)
                lanes.setdefault(entry.priority, []).append(self._finished(r, entry))
            else:  # the short form, column-wise (parse_entry gave it the lane it came from)
                short.setdefault(request.priority, []).append((request, r.outcome))
        for m in malformed:
            lanes.setdefault(m.entry.priority, []).append(self._dead_entry(m))
        sending = Sending(keys)
        script = self._scripts.finish_batch
        for priority, items in lanes.items():
            ran_here = short.get(priority, [])
            if not items and not ran_here:
                continue
            script_keys, argv = finish_batch_args(
                keys, items, ttl_ms=self._ttl_ms, dead_maxlen=self._dead_maxlen,
                priority=priority, common=common, short=ran_here,
            )  # fmt: skip
            if self._deferred is None:
                sending.replies.append(script(keys=script_keys, args=argv))
            else:
                self._deferred.send("EVALSHA", script.sha, len(script_keys), *script_keys, *argv)
            sending.calls.append((items, ran_here, script_keys, argv))
        return sending

    def settle(self, sending: Sending) -> int:
        """Read the replies of a ``send``; returns how many results already existed. Every
        reply is read even when one is an error, which is raised after."""
        existed = 0
        refused: redis.ResponseError | None = None
        for items, ran_here, script_keys, argv in sending.calls:
            try:
                reply = sending.replies.pop(0) if sending.replies else self._read()
            except redis.exceptions.NoScriptError:
                # Redis lost its script cache (a restart): the call did not run; run it
                # through redis-py's Script, which loads the script first.
                reply = self._scripts.finish_batch(keys=script_keys, args=argv)
            except redis.ResponseError as exc:
                refused = refused or exc
                continue
            existed += self._told(sending.keys, items, ran_here, reply)
        if refused is not None:
            raise refused
        return existed

    def close(self) -> None:
        if self._deferred is not None:
            self._deferred.close()

    def _read(self) -> Any:
        assert self._deferred is not None
        return self._deferred.read()

    def _told(
        self,
        keys: QueueKeys,
        items: list[Finished],
        ran: list[tuple[Request, Outcome]],
        reply: Any,
    ) -> int:
        """Tell the producers a finish_batch reply names (guard followers); its ``existed``."""
        existed, *guarded = reply
        if guarded:
            own = {i.outcome.id: i.reply for i in items if i.outcome is not None}
            own.update((outcome.id, request.reply) for request, outcome in ran)
            followers = followers_of(guarded, own)
            self._scripts.tell_followers(keys, followers, ttl_ms=self._ttl_ms)
        return int(existed)

    def hand_back(self, entries: list[RawEntry]) -> int:
        """Return entries read but never started to their streams at once (same attempt):
        one requeue call per queue and lane, each entry back into the lane it came from."""
        moved = 0
        by_lane: dict[tuple[str, str], list[RawEntry]] = {}
        for entry in entries:
            by_lane.setdefault((entry.queue, entry.priority), []).append(entry)
        for (queue, priority), held in by_lane.items():
            script_keys, argv = requeue_args(
                self._keyspace.queue(queue),
                self._worker,
                [RequeueItem(e.entry_id) for e in held],
                mode=HANDBACK,
                max_attempts=self._max_attempts,
                ttl_ms=self._ttl_ms,
                dead_maxlen=self._dead_maxlen,
                now_ms=now_ms(),
                reason="",
                priority=priority,
            )
            moved += int(self._scripts.requeue(keys=script_keys, args=argv)[0])
        return moved

    def reclaim(self, queue: str, priority: str, entry_ids: list[str]) -> tuple[int, int]:
        """Put entries pending to this worker that it does not hold (a read's reply lost on
        the way) back into their lane, as the scheduler does for a dead worker: an entry
        this worker had started counts an attempt (dead-lettered past max_attempts), one
        only delivered goes back as it was. Returns (re-queued, dead-lettered)."""
        keys = self._keyspace.queue(queue)
        stream = keys.stream_for(priority)
        pipe = self._client.pipeline(transaction=False)
        for entry_id in entry_ids:  # requeue.lua needs the result and reply keys in KEYS
            pipe.xrange(stream, entry_id, entry_id)
        held = [
            held_entry(entry_id, found[0][1] if found else None)
            for entry_id, found in zip(entry_ids, pipe.execute(), strict=True)
        ]
        script_keys, argv = requeue_args(
            keys, self._worker, held, mode=RETRY, max_attempts=self._max_attempts,
            ttl_ms=self._ttl_ms, dead_maxlen=self._dead_maxlen, now_ms=now_ms(),
            reason=f"lost on its way to worker {self._worker}", priority=priority,
        )  # fmt: skip
        counts = self._scripts.requeue(keys=script_keys, args=argv)
        if len(counts) > 3:
            own = {h.request_id: h.reply for h in held if h.request_id}
            followers = followers_of(counts[3:], own)
            self._scripts.tell_followers(keys, followers, ttl_ms=self._ttl_ms)
        return int(counts[0]), int(counts[1])

    def leave_group(self, queue: str) -> bool:
        """Remove this worker's consumer from every lane's group if it holds nothing there
        and its heartbeat is gone."""
        script_keys, argv = remove_consumer_args(self._keyspace.queue(queue), self._worker)
        return bool(self._scripts.remove_consumer(keys=script_keys, args=argv))

    def _finished(self, ran: Ran, entry: RawEntry) -> Finished:
        """A request that does not take the short form: a retry, a dead letter, or one whose
        batch times differ from the batch's first request's (the common fields)."""
        request: Request = ran.request
        if ran.retry:
            if request.attempt < self._max_attempts:
                due = retry_due_ms(request.attempt, ran.retry_delay_s, self._retry_delay_s, ran.end)
                return Finished(
                    entry_id=request.entry_id,
                    outcome=None,
                    due_ms=due,
                    delayed=delayed_member(entry.fields, request.attempt + 1, entry.priority),
                )
            reason = f"retried {request.attempt} times, max_attempts reached: {ran.outcome.error}"
            ran = replace(ran, outcome=Outcome(request.id, DEAD, reason.encode()))
        dead = ran.outcome.status == DEAD
        result = result_fields(
            ran.outcome,
            ct=request.ct,
            worker=self._worker,
            attempt=request.attempt,
            enq=request.enq,
            start=ran.start,
            end=ran.end,
            batch=ran.batch,
        )
        return Finished(
            entry_id=request.entry_id,
            outcome=ran.outcome,
            reply=request.reply,
            result=result,
            dead_reason=ran.outcome.error if dead else "",
            dead_fields=entry.fields if dead else None,
        )

    def _dead_entry(self, malformed: Malformed) -> Finished:
        """A malformed entry: dead-lettered; if it has a usable id, its result says why."""
        entry = malformed.entry
        request_id = entry_request_id(entry.fields)
        outcome = None
        result = None
        reply = ""
        if request_id is not None:
            outcome = Outcome(request_id, DEAD, malformed.reason.encode())
            result = result_fields(outcome, worker=self._worker)
            reply = _valid_reply(entry.fields)
        return Finished(
            entry_id=entry.entry_id,
            outcome=outcome,
            reply=reply,
            result=result,
            dead_reason=malformed.reason,
            dead_fields=bounded_copy(entry.fields),
        )


def _raw_entry(raw: dict[str, RawEntry], request: Request) -> RawEntry:
    entry = raw.get(entry_key(request.priority, request.entry_id))
    return entry if entry is not None else raw[request.entry_id]


def _valid_reply(fields: dict[bytes, bytes]) -> str:
    # Reuse the id rule: a reply field that is not a valid producer id cannot name a key.
    raw = fields.get(b"reply", b"")
    return entry_request_id({b"id": raw}) or ""
