"""Where a request is: the Redis reads behind ``redbatch inspect`` (and ``dlq``'s look-ups).

A request can be in several places of its queue, and in more than one during a transition
(a retry both in the delayed set and, a moment later, in its lane; a dead letter and its
``dead`` result): every place is looked at and every sighting reported. Each sighting is a
JSON-ready dict with ``queue`` and ``state`` (``waiting``, ``held``, ``delayed``, ``finished``,
``cancelled``, ``dead``) and the state's own fields; ``view`` renders them as text.

Streams are not indexed by request id, so finding an entry is a scan. It is done in chunks of
``SCAN_CHUNK`` entries (``XRANGE``/``XREVRANGE ... COUNT``, resumed after the last id seen), so
no single command holds Redis for long or returns a huge reply. The scans are bounded by what
the contract bounds: a lane holds at most the producers' ``max_queue_len`` requests (100,000
by default; the bound is per lane, and it is the producer's setting: ``max_queue_len=0`` lifts
it), the dead stream is trimmed to about ``dead_maxlen`` (``REDBATCH_DEAD_MAXLEN``, 100,000),
and the delayed set holds only requests in flight. At 500 entries a round trip that is a few
hundred round trips at worst: fine for an operator command, not for a request path.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgpack
import redis

from redbatch.clock import now_ms
from redbatch.ops.inspect.view import (
    decoded_fields,
    entry_ms,
    number,
    payload_view,
    text,
)
from redbatch.protocol.codec import MSGPACK
from redbatch.protocol.fields import ATTEMPT, ENQ, ID, PAYLOAD, PRIORITY, STARTED_DELIVERIES
from redbatch.protocol.keys import DEFAULT_PRIORITY, GROUP, PRIORITIES, KeySpace, QueueKeys
from redbatch.protocol.records import (
    DEAD_REASON,
    RESULT_ATTEMPT,
    RESULT_BATCH,
    RESULT_CT,
    RESULT_END,
    RESULT_ENQ,
    RESULT_ERROR,
    RESULT_PAYLOAD,
    RESULT_START,
    RESULT_STATUS,
    RESULT_WORKER,
)

SCAN_CHUNK = 500
# A worker marks an entry started by setting its delivery count to 2 (docs/wire-contract.md,
# "What a worker does").

Sighting = dict[str, Any]
Entry = tuple[str, dict[bytes, bytes]]


def _missing(exc: redis.ResponseError) -> bool:
    message = str(exc)
    return message.startswith("NOGROUP") or "no such key" in message.lower()


def scan_stream(
    client: redis.Redis, stream: str, request_id: str, *, newest_first: bool = False
) -> list[Entry]:
    """Every entry of ``stream`` whose ``id`` field is ``request_id``, in chunks of
    ``SCAN_CHUNK`` (oldest first, or newest first)."""
    wanted = request_id.encode()
    found: list[Entry] = []
    for chunk in stream_chunks(client, stream, newest_first=newest_first):
        found += [(i, f) for i, f in chunk if f.get(ID.encode()) == wanted]
    return found


def stream_chunks(
    client: redis.Redis,
    stream: str,
    *,
    newest_first: bool = False,
    last: str = "+",
    chunk: int = SCAN_CHUNK,
) -> Iterator[list[Entry]]:
    """Yield a stream's entries (up to and including ``last``) as lists of (entry id,
    fields), ``chunk`` at a time; each read resumes after the previous chunk's last id, so
    entries added or deleted meanwhile never make it repeat or stop early."""
    low, high = "-", last
    while True:
        if newest_first:
            entries = rows(client.xrevrange(stream, high, low, count=chunk))
        else:
            entries = rows(client.xrange(stream, low, high, count=chunk))
        if entries:
            yield entries
        if len(entries) < chunk:
            return
        if newest_first:
            high = f"({entries[-1][0]}"
        else:
            low = f"({entries[-1][0]}"


def rows(reply: Any) -> list[Entry]:
    """An XRANGE/XREVRANGE reply as (entry id, fields) pairs."""
    return [(text(entry_id), dict(fields or {})) for entry_id, fields in reply or []]


def unflat(member: bytes) -> dict[bytes, bytes] | None:
    """A delayed-set member (msgpack flat array of raw strings) as fields; None if it is not
    one (move_due.lua dead-letters those)."""
    try:
        flat = msgpack.unpackb(member, raw=True)
    except (ValueError, msgpack.UnpackException):
        return None
    if not isinstance(flat, list) or len(flat) % 2 or not all(isinstance(x, bytes) for x in flat):
        return None
    return dict(zip(flat[::2], flat[1::2], strict=True))


def find(client: redis.Redis, keys: QueueKeys, request_id: str) -> list[Sighting]:
    """Every place of queue ``keys`` where ``request_id`` is, in the order a request moves
    through them: lanes (waiting or held), delayed, result, cancel key, dead letters."""
    sightings = _in_lanes(client, keys, request_id)
    sightings += _delayed(client, keys, request_id)
    sightings += _result_and_cancel(client, keys, request_id)
    sightings += [dead_sighting(keys.name, i, f) for i, f in _dead(client, keys, request_id)]
    return sightings


def find_everywhere(
    client: redis.Redis, keyspace: KeySpace, request_id: str, queue: str | None = None
) -> tuple[list[str], list[Sighting]]:
    """The queues looked in (``queue``, or every queue of the namespace: shards are queues of
    ``rb:queues`` too) and every sighting of ``request_id`` in them (``find``)."""
    if queue is not None:
        queues = [queue]
    else:
        queues = sorted(text(q) for q in client.smembers(keyspace.queues))
    sightings: list[Sighting] = []
    for name in queues:
        sightings += find(client, keyspace.queue(name), request_id)
    return queues, sightings


def _dead(client: redis.Redis, keys: QueueKeys, request_id: str) -> list[Entry]:
    # Newest first: the latest death is the one that matters.
    return scan_stream(client, keys.dead, request_id, newest_first=True)


def _entry_facts(fields: dict[bytes, bytes]) -> Sighting:
    payload = fields.get(PAYLOAD.encode())
    return {
        "attempt": number(fields.get(ATTEMPT.encode()), 1) or 1,
        "enq_ms": number(fields.get(ENQ.encode())),
        "fields": decoded_fields(fields),
        "payload_bytes": None if payload is None else len(payload),
    }


def _in_lanes(client: redis.Redis, keys: QueueKeys, request_id: str) -> list[Sighting]:
    found = [
        (priority, entry_id, fields)
        for priority in PRIORITIES
        for entry_id, fields in scan_stream(client, keys.stream_for(priority), request_id)
    ]
    if not found:
        return []
    pipe = client.pipeline(transaction=False)
    for priority, entry_id, _fields in found:
        pipe.xpending_range(keys.stream_for(priority), GROUP, entry_id, entry_id, 1)
    pending = pipe.execute(raise_on_error=False)
    holders = {text(rows[0]["consumer"]) for rows in pending if isinstance(rows, list) and rows}
    alive = _alive(client, keys, sorted(holders))
    sightings = []
    for (priority, entry_id, fields), rows in zip(found, pending, strict=True):
        if isinstance(rows, redis.ResponseError) and not _missing(rows):
            raise rows
        sighting: Sighting = {
            "queue": keys.name,
            "state": "waiting",
            "lane": priority,
            "entry_id": entry_id,
            "since_ms": entry_ms(entry_id),
            **_entry_facts(fields),
        }
        if isinstance(rows, list) and rows:
            sighting.update(_held(rows[0], alive))
        sightings.append(sighting)
    return sightings


def _held(row: dict[str, Any], alive: dict[str, bool]) -> Sighting:
    consumer = text(row["consumer"])
    idle = int(row["time_since_delivered"])
    deliveries = int(row["times_delivered"])
    return {
        "state": "held",
        "consumer": consumer,
        "worker_alive": alive.get(consumer, False),
        "idle_ms": idle,
        "held_since_ms": now_ms() - idle,
        "deliveries": deliveries,
        "started": deliveries >= STARTED_DELIVERIES,
    }


def _alive(client: redis.Redis, keys: QueueKeys, names: list[str]) -> dict[str, bool]:
    if not names:
        return {}
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.exists(keys.worker(name))
    return {name: bool(n) for name, n in zip(names, pipe.execute(), strict=True)}


def _delayed(client: redis.Redis, keys: QueueKeys, request_id: str) -> list[Sighting]:
    # ZSCAN: members present for the whole scan are returned; the set is small (in flight).
    wanted = request_id.encode()
    sightings = []
    for member, score in client.zscan_iter(keys.delayed, count=SCAN_CHUNK):
        fields = unflat(member)
        if fields is None or fields.get(ID.encode()) != wanted:
            continue
        sightings.append(
            {
                "queue": keys.name,
                "state": "delayed",
                "lane": text(fields.get(PRIORITY.encode()), DEFAULT_PRIORITY),
                "due_ms": int(score),
                **_entry_facts(fields),
            }
        )
    return sightings


def _result_and_cancel(client: redis.Redis, keys: QueueKeys, request_id: str) -> list[Sighting]:
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(keys.result(request_id))
    pipe.pttl(keys.result(request_id))
    pipe.pttl(keys.cancel(request_id))
    result, result_ttl, cancel_ttl = pipe.execute()
    sightings = []
    # A result whose TTL ran out is gone: Redis never returns it, so it is "not found".
    if result:
        sightings.append(result_sighting(keys.name, result, int(result_ttl)))
    if int(cancel_ttl) != -2:  # -2: no such key
        sightings.append(
            {"queue": keys.name, "state": "cancelled", "expires_in_ms": _ttl(int(cancel_ttl))}
        )
    return sightings


def _ttl(pttl: int) -> int | None:
    """PTTL as a JSON value: None for a key without expiry."""
    return None if pttl < 0 else pttl


def result_sighting(queue: str, result: dict[bytes, bytes], pttl: int) -> Sighting:
    status = text(result.get(RESULT_STATUS.encode()), "?")
    sighting: Sighting = {
        "queue": queue,
        "state": "finished",
        "status": status,
        "worker": text(result.get(RESULT_WORKER.encode())),
        "attempt": number(result.get(RESULT_ATTEMPT.encode())),
        "enq_ms": number(result.get(RESULT_ENQ.encode())),
        "start_ms": number(result.get(RESULT_START.encode())),
        "end_ms": number(result.get(RESULT_END.encode())),
        "batch": number(result.get(RESULT_BATCH.encode())),
        "expires_in_ms": _ttl(pttl),
    }
    if RESULT_PAYLOAD.encode() in result:
        ct = text(result.get(RESULT_CT.encode()), MSGPACK)
        sighting["payload"] = payload_view(result[RESULT_PAYLOAD.encode()], ct)
    if RESULT_ERROR.encode() in result:
        sighting["error"] = text(result[RESULT_ERROR.encode()])
    return sighting


def dead_sighting(queue: str, entry_id: str, fields: dict[bytes, bytes]) -> Sighting:
    return {
        "queue": queue,
        "state": "dead",
        "dead_entry_id": entry_id,
        "dead_at_ms": entry_ms(entry_id),
        "reason": text(fields.get(DEAD_REASON.encode())),
        "lane": text(fields.get(PRIORITY.encode()), DEFAULT_PRIORITY),
        **_entry_facts(fields),
    }
