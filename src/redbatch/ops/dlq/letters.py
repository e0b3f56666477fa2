"""The Redis work behind ``redbatch dlq``: list, look up, replay and purge dead letters.

A dead letter is an entry of ``rb:{Q}:dead``: the original request entry's fields plus
``reason``. Replaying one is ``replay.lua``: one atomic step re-adds it to the lane it came
from as attempt 1 (with ``replayed``/``replayed_at``), deletes the request's ``dead`` result
(results are write-once: the re-run's outcome could not be written otherwise) and deletes
the dead letter, so a replay done twice, or racing a purge, is a no-op.

A sharded queue's dead letters are in each of its physical queues (``physical``); the
functions taking a ``KeySpace`` and a queue name cover all of them, as ``redbatch dlq`` and
``redbatch dashboard`` show them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import redis

from redbatch.errors import MalformedEntry
from redbatch.ops.inspect.find import Entry, rows, scan_stream, stream_chunks
from redbatch.ops.inspect.view import (
    decoded_fields,
    entry_ms,
    entry_payload,
    is_entry_id,
    number,
    text,
)
from redbatch.protocol.fields import ATTEMPT, ID, PRIORITY, entry_request_id, parse_entry
from redbatch.protocol.keys import DEFAULT_PRIORITY, KeySpace, QueueKeys
from redbatch.protocol.records import DEAD_REASON, DEAD_REPLAYED
from redbatch.protocol.scripts import Scripts, replay_args
from redbatch.protocol.shards import read_shards, served_names
from redbatch.protocol.streams import ensure_queue

# Outcomes of one replay request.
REPLAYED = "replayed"
GONE = "gone"  # the dead letter was replayed or purged meanwhile: nothing to do
NOT_FOUND = "not_found"  # no dead letter matches the id given: nothing to do
REFUSED = "refused"  # the dead letter cannot be replayed (and stays)
SKIPPED = "skipped"  # an older dead letter of a request whose newest one is replayed


def summary(entry_id: str, fields: dict[bytes, bytes]) -> dict[str, Any]:
    """One dead letter as ``dlq list`` shows it."""
    return {
        "entry_id": entry_id,
        "request_id": text(fields.get(ID.encode())) or None,
        "reason": text(fields.get(DEAD_REASON.encode())),
        "dead_at_ms": entry_ms(entry_id),
        "attempt": number(fields.get(ATTEMPT.encode()), 1) or 1,
        "lane": text(fields.get(PRIORITY.encode()), DEFAULT_PRIORITY),
        "replayed": number(fields.get(DEAD_REPLAYED.encode())),
    }


def detail(entry_id: str, fields: dict[bytes, bytes]) -> dict[str, Any]:
    """One dead letter with every field and its payload decoded (``dlq show``)."""
    return {
        "entry_id": entry_id,
        "dead_at_ms": entry_ms(entry_id),
        "fields": decoded_fields(fields),
        "payload": entry_payload(fields),
    }


def newest(client: redis.Redis, keys: QueueKeys, limit: int) -> tuple[int, list[Entry]]:
    """How many dead letters there are, and the newest ``limit`` of them."""
    pipe = client.pipeline(transaction=False)
    pipe.xlen(keys.dead)
    pipe.xrevrange(keys.dead, "+", "-", count=limit)
    total, found = pipe.execute()
    return int(total), rows(found)


def lookup(client: redis.Redis, keys: QueueKeys, ident: str) -> list[Entry]:
    """Dead letters named by ``ident``: a dead entry id, else a request id (newest first:
    a request may have died more than once). The scan is bounded by ``dead_maxlen``."""
    if is_entry_id(ident):
        found = rows(client.xrange(keys.dead, ident, ident))
        if found:
            return found
    return scan_stream(client, keys.dead, ident, newest_first=True)


@dataclass
class Replay:
    """What happened to one dead letter asked to be replayed."""

    outcome: str
    ident: str  # what the operator named (an entry id or a request id)
    dead_entry_id: str = ""
    request_id: str = ""
    detail: str = ""
    lane: str = ""
    entry_id: str = ""  # the re-queued entry, in ``lane``
    replayed: int = 0  # how many times the request has been replayed, this one included

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def unreplayable(keys: QueueKeys, entry_id: str, fields: dict[bytes, bytes]) -> str:
    """Why a dead letter cannot run again ("" if it can): an entry a worker would only
    dead-letter again (no valid id, no payload, a bad field) stays where it is."""
    if entry_request_id(fields) is None:
        reason = text(fields.get(DEAD_REASON.encode())) or "?"
        return f"it has no valid request id (dead because: {reason})"
    try:
        parse_entry(keys.name, entry_id, fields)
    except MalformedEntry as exc:
        return f"it is malformed: {exc}"
    return ""


def _skipped(ident: str, entry_id: str, request_id: str, newer: str) -> Replay:
    why = f"an older dead letter of the same request; its newest, {newer}, is the one replayed"
    return Replay(SKIPPED, ident, entry_id, request_id, why)


class Replayer:
    """Replays dead letters of one queue through replay.lua."""

    def __init__(self, client: redis.Redis, keyspace: KeySpace, keys: QueueKeys) -> None:
        self._client = client
        self._keys = keys
        self._scripts = Scripts(client)
        # The lanes' streams and groups exist before anything is added to them.
        ensure_queue(client, keyspace, keys)

    def by_ids(self, idents: list[str], now_ms: int) -> list[Replay]:
        """Replay what each ident names: a dead entry id, or a request id (its newest dead
        letter; older ones of the same request are skipped: a request runs once)."""
        results: list[Replay] = []
        for ident in idents:
            found = lookup(self._client, self._keys, ident)
            if not found:
                results.append(Replay(NOT_FOUND, ident, detail="no such dead letter"))
                continue
            (entry_id, fields), *older = found
            request_id = text(fields.get(ID.encode()))
            why = unreplayable(self._keys, entry_id, fields)
            if why:
                results.append(Replay(REFUSED, ident, entry_id, request_id, why))
            else:
                results.append(self._run(ident, entry_id, request_id, now_ms))
            results += [_skipped(ident, i, request_id, entry_id) for i, _f in older]
        return results

    def everything(self, now_ms: int) -> list[Replay]:
        """Replay every dead letter there is now (oldest first). Those added while this runs
        (a replayed request dying again at once) are left for the next call, so this ends.
        Of several dead letters of one request only the newest is replayed."""
        last = self._client.xrevrange(self._keys.dead, "+", "-", count=1)
        if not last:
            return []
        newest_of: dict[str, str] = {}  # request id -> its newest dead entry id
        results: list[Replay] = []
        for chunk in stream_chunks(self._client, self._keys.dead, last=text(last[0][0])):
            for entry_id, fields in chunk:
                request_id = text(fields.get(ID.encode()))
                why = unreplayable(self._keys, entry_id, fields)
                if why:
                    results.append(Replay(REFUSED, entry_id, entry_id, request_id, why))
                    continue
                older = newest_of.get(request_id)
                if older is not None:
                    results.append(_skipped(older, older, request_id, entry_id))
                newest_of[request_id] = entry_id
        for request_id, entry_id in newest_of.items():
            results.append(self._run(entry_id, entry_id, request_id, now_ms))
        return results

    def _run(self, ident: str, entry_id: str, request_id: str, now_ms: int) -> Replay:
        script_keys, argv = replay_args(self._keys, entry_id, request_id, now_ms=now_ms)
        reply = self._scripts.replay(keys=script_keys, args=argv)
        code = int(reply[0])
        if code == 1:
            new_id, lane, count = text(reply[1]), text(reply[2]), int(reply[3])
            return Replay(REPLAYED, ident, entry_id, request_id, "", lane, new_id, count)
        if code == 0:
            return Replay(GONE, ident, entry_id, request_id, "replayed or purged meanwhile")
        if code == -2:
            why = (
                f"the request already has the result {text(reply[1])!r}: a re-run cannot change it"
            )
        elif code == -3:
            why = f"it names an unknown priority {text(reply[1])!r}"
        elif code == -4:
            why = f"it has {text(reply[1])} fields, more than an entry may have"
        else:
            why = f"its id field is {text(reply[1])!r}, not {request_id!r}"
        return Replay(REFUSED, ident, entry_id, request_id, why)


def last_entry(client: redis.Redis, keys: QueueKeys) -> tuple[int, str | None]:
    """How many dead letters there are and the newest one's entry id (None when empty)."""
    pipe = client.pipeline(transaction=False)
    pipe.xlen(keys.dead)
    pipe.xrevrange(keys.dead, "+", "-", count=1)
    total, found = pipe.execute()
    return int(total), (text(found[0][0]) if found else None)


def purge(client: redis.Redis, keys: QueueKeys, last: str) -> int:
    """Delete the dead letters up to and including entry ``last``; returns how many.

    ``XTRIM MINID`` (exact) with the id right after ``last``: a dead letter added after the
    operator saw (and confirmed) the count has a greater id and stays."""
    ms, _, seq = last.partition("-")
    return int(client.xtrim(keys.dead, minid=f"{ms}-{int(seq) + 1}", approximate=False))


# -- a whole queue: itself and every shard --------------------------------------------------------


def physical(client: redis.Redis, keyspace: KeySpace, queue: str) -> list[QueueKeys]:
    """The keys of every physical queue holding ``queue``'s dead letters: itself, and its
    shards when it has more than one."""
    return [
        keyspace.queue(name) for name in served_names(queue, read_shards(client, keyspace, queue))
    ]


def _order(entry_id: str) -> tuple[int, ...]:
    return tuple(int(part) for part in entry_id.split("-"))


def newest_letters(
    client: redis.Redis, keyspace: KeySpace, queue: str, limit: int
) -> tuple[int, list[dict[str, Any]]]:
    """How many dead letters ``queue`` has, and the newest ``limit`` as ``summary`` dicts
    (newest first across shards: entry ids are ``ms-seq``)."""
    total, found = 0, []
    for keys in physical(client, keyspace, queue):
        count, rows_ = newest(client, keys, limit)
        total += count
        found += rows_
    found.sort(key=lambda row: _order(row[0]), reverse=True)
    return total, [summary(i, f) for i, f in found[:limit]]


def find_letters(
    client: redis.Redis, keyspace: KeySpace, queue: str, ident: str
) -> list[dict[str, Any]]:
    """Every dead letter of ``queue`` that ``ident`` names (``lookup``), as ``detail`` dicts."""
    return [
        detail(i, f)
        for keys in physical(client, keyspace, queue)
        for i, f in lookup(client, keys, ident)
    ]


def replay_letters(
    client: redis.Redis,
    keyspace: KeySpace,
    queue: str,
    idents: list[str],
    clock: Callable[[], int],
) -> list[Replay]:
    """Replay what each of ``idents`` names in ``queue`` (``Replayer.by_ids``, per shard)."""
    replayers = [Replayer(client, keyspace, keys) for keys in physical(client, keyspace, queue)]
    results = []
    for ident in idents:
        # An id lives in one shard: the others would each answer "not found".
        tried = [r for replayer in replayers for r in replayer.by_ids([ident], clock())]
        found = [r for r in tried if r.outcome != NOT_FOUND]
        results += found or tried[:1]
    return results


def replay_every(
    client: redis.Redis, keyspace: KeySpace, queue: str, clock: Callable[[], int]
) -> list[Replay]:
    """Replay every dead letter of ``queue`` (``Replayer.everything``, per shard)."""
    replayers = [Replayer(client, keyspace, keys) for keys in physical(client, keyspace, queue)]
    return [r for replayer in replayers for r in replayer.everything(clock())]


@dataclass
class PurgePlan:
    """What a purge of a queue will delete: per physical queue, the count and newest entry."""

    shards: list[tuple[QueueKeys, int, str | None]]

    @property
    def total(self) -> int:
        return sum(count for _, count, _ in self.shards)

    @property
    def empty(self) -> bool:
        return all(last is None for _, _, last in self.shards)


def purge_plan(client: redis.Redis, keyspace: KeySpace, queue: str) -> PurgePlan:
    return PurgePlan(
        [(keys, *last_entry(client, keys)) for keys in physical(client, keyspace, queue)]
    )


def purge_planned(client: redis.Redis, plan: PurgePlan) -> int:
    """Delete what ``plan`` counted (``purge`` per shard: dead letters added since stay)."""
    return sum(purge(client, keys, last) for keys, _, last in plan.shards if last is not None)
