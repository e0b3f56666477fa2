"""Records a batch's outcomes: one Lua call writes every result hash (write-once, with TTL),
pushes each producer's replies, dead-letters malformed entries, and XACKs + XDELs the entries,
so the stream does not grow with processed requests.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from redbatch.protocol.fields import DEAD, Outcome, Request, entry_request_id, result_fields
from redbatch.protocol.keys import KeySpace, QueueKeys
from redbatch.protocol.scripts import Finished, Scripts, finish_batch_args
from redbatch.worker.executor import Ran
from redbatch.worker.reader import RawEntry


@dataclass(frozen=True, slots=True)
class Malformed:
    """An entry that broke the wire contract, with the reason it is dead-lettered."""

    entry: RawEntry
    reason: str


class Writer:
    def __init__(
        self,
        client: redis.Redis,
        keyspace: KeySpace,
        worker_name: str,
        *,
        result_ttl_s: int,
        dead_maxlen: int,
    ) -> None:
        self._scripts = Scripts(client)
        self._keyspace = keyspace
        self._worker = worker_name
        self._ttl_ms = result_ttl_s * 1000
        self._dead_maxlen = dead_maxlen

    def finish(
        self,
        queue: str,
        ran: list[Ran],
        malformed: list[Malformed],
        raw: dict[str, RawEntry],
    ) -> int:
        """Write one queue's outcomes; returns how many results already existed."""
        keys: QueueKeys = self._keyspace.queue(queue)
        items = [self._finished(r, raw[r.request.entry_id]) for r in ran]
        items += [self._dead_entry(m) for m in malformed]
        if not items:
            return 0
        script_keys, argv = finish_batch_args(
            keys, items, ttl_ms=self._ttl_ms, dead_maxlen=self._dead_maxlen
        )
        return int(self._scripts.finish_batch(keys=script_keys, args=argv))

    def _finished(self, ran: Ran, entry: RawEntry) -> Finished:
        request: Request = ran.request
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
        dead = ran.outcome.status == DEAD
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
            dead_fields=entry.fields,
        )


def _valid_reply(fields: dict[bytes, bytes]) -> str:
    # Reuse the id rule: a reply field that is not a valid producer id cannot name a key.
    raw = fields.get(b"reply", b"")
    return entry_request_id({b"id": raw}) or ""
