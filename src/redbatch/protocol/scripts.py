"""Lua scripts of the wire contract, and the pure code that builds their KEYS and ARGV.

Scripts live as ``lua/*.lua`` files whose header documents KEYS, ARGV and the reply. Every key
a script touches arrives through KEYS and carries the queue's ``{Q}`` hash tag.

A script that works on entries of one lane (finish_batch, requeue, admit, admit_once) takes
that lane's stream as KEYS[1] (``priority``, default normal); a batch or hand-back that mixes
lanes is one call per lane. Scripts about the whole queue (move_due, remove_consumer) get
every lane's stream.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any, Protocol

import msgpack

from redbatch.protocol.codec import MSGPACK
from redbatch.protocol.fields import (
    ATTEMPT,
    OK,
    PRIORITY,
    PRODUCER_ID,
    REPLY,
    Outcome,
    entry_request_id,
)
from redbatch.protocol.keys import DEFAULT_PRIORITY, GROUP, PRIORITIES, QueueKeys, check_priority
from redbatch.protocol.records import DEAD_REASON
from redbatch.transport.deferred import packed_script


def load_lua(name: str) -> str:
    return resources.files("redbatch.protocol").joinpath("lua", f"{name}.lua").read_text()


class Facts(Protocol):
    """What a request's result hash holds of the request itself (a ``Request`` has them);
    the rest (worker, start, end, batch) is the batch's and travels once per call."""

    @property
    def attempt(self) -> int: ...
    @property
    def enq(self) -> int: ...
    @property
    def ct(self) -> str: ...


@dataclass(frozen=True, slots=True)
class RunFacts:
    attempt: int
    enq: int
    ct: str = MSGPACK


# Not frozen: one is built per request on the hot path, and a frozen dataclass's __init__
# sets each field through object.__setattr__ (4x the cost). Treat it as immutable.
@dataclass(slots=True)
class Finished:
    """One processed stream entry and what to record for it.

    ``outcome`` is None for an entry that cannot be addressed (no valid id): it is only
    dead-lettered and acked. ``dead_reason`` set means: also copy the entry to the dead stream.
    The result hash is ``result`` when given, else built by the script from ``facts`` and the
    batch's common fields (the short form, for requests that ran).
    """

    entry_id: str
    outcome: Outcome | None
    reply: str = ""
    result: dict[str, str | bytes | int] | None = None
    dead_reason: str = ""
    dead_fields: dict[bytes, bytes] | None = None
    # A retry for later: due time (ms since epoch) and the delayed-set member.
    due_ms: int = 0
    delayed: bytes = b""
    facts: Facts | None = None


def _values(mapping: dict[Any, Any]) -> list[Any]:
    """A hash as counted plain arguments [n, field, value, ...]: Lua passes them to HSET/XADD
    unchanged. Integers travel as redis-py formats them (decimal text)."""
    flat: list[Any] = [2 * len(mapping)]
    for pair in mapping.items():
        flat += pair
    return flat


def finish_batch_args(
    keys: QueueKeys,
    items: list[Finished],
    *,
    ttl_ms: int,
    dead_maxlen: int,
    priority: str = DEFAULT_PRIORITY,
    common: dict[str, str | int] | None = None,
) -> tuple[list[str], list[bytes | str | int]]:
    """KEYS and ARGV for finish_batch.lua: ``items`` all read from the lane ``priority``;
    ``common`` holds the result fields shared by the items given with ``facts``."""
    script_keys = [keys.stream_for(priority), keys.dead, keys.delayed]
    reply_keys: dict[str, int] = {}
    with_outcome = [i.outcome.id for i in items if i.outcome is not None and not i.due_ms]
    argv: list[bytes | str | int] = [GROUP, ttl_ms, dead_maxlen, len(with_outcome)]
    argv += _values(common or {})
    first_reply = len(script_keys) + 2 * len(with_outcome) + 1  # Lua's KEYS is 1-based
    for request_id in with_outcome:
        script_keys += [keys.result(request_id), keys.guard(request_id)]

    def reply_index(producer: str) -> int:
        at = reply_keys.get(producer)
        if at is None:
            at = reply_keys[producer] = first_reply + len(reply_keys)
        return at

    for item in items:
        outcome = item.outcome
        if item.due_ms:
            argv += ["d", item.entry_id, item.due_ms, item.delayed]
            continue
        reply_idx = reply_index(item.reply) if outcome is not None and item.reply else 0
        facts = item.facts
        if outcome is not None and facts is not None and not item.dead_reason:
            argv += [
                "r", item.entry_id, outcome.id, reply_idx, outcome.encode_reply(),
                outcome.status, outcome.body, facts.attempt, facts.enq,
                facts.ct if facts.ct != MSGPACK and outcome.status == OK else "",
            ]  # fmt: skip
            continue
        if outcome is not None:
            argv += ["g", item.entry_id, outcome.id, reply_idx, outcome.encode_reply()]
            argv += _values(item.result or {})
        else:
            argv += ["g", item.entry_id, "", 0, b"", 0]
        if item.dead_reason:
            dead_entry = dict(item.dead_fields or {})
            dead_entry[DEAD_REASON.encode()] = item.dead_reason.encode()
            argv += _values(dead_entry)
        else:
            argv.append(0)
    script_keys += [keys.reply(producer) for producer in reply_keys]
    return script_keys, argv


RETRY = "retry"
HANDBACK = "handback"


@dataclass(frozen=True, slots=True)
class RequeueItem:
    """A pending entry to move back: its stream id and, when known, request id and reply."""

    entry_id: str
    request_id: str = ""
    reply: str = ""


def held_entry(entry_id: str, fields: Mapping[bytes, bytes] | None) -> RequeueItem:
    """What requeue.lua needs about one entry; a vanished or id-less entry is still passed
    (the script acks it), only without result or reply key."""
    if fields is None:
        return RequeueItem(entry_id)
    request_id = entry_request_id(dict(fields))
    if request_id is None:
        return RequeueItem(entry_id)
    reply = fields.get(REPLY.encode(), b"").decode("ascii", "replace")
    if reply and not PRODUCER_ID.fullmatch(reply):
        reply = ""  # it could not name a key; the request still ends dead or re-queued
    return RequeueItem(entry_id, request_id, reply)


def requeue_args(
    keys: QueueKeys,
    from_consumer: str,
    entries: list[RequeueItem],
    *,
    mode: str,
    max_attempts: int,
    ttl_ms: int,
    dead_maxlen: int,
    now_ms: int,
    reason: str,
    priority: str = DEFAULT_PRIORITY,
) -> tuple[list[str], list[bytes | str | int]]:
    """KEYS and ARGV for requeue.lua: ``entries`` all pending in the lane ``priority``, and
    re-added to it."""
    if mode not in (RETRY, HANDBACK):
        raise ValueError(f"unknown requeue mode {mode!r}")
    script_keys = [keys.stream_for(priority), keys.dead]
    index: dict[str, int] = {}

    def key_index(key: str) -> int:
        if key not in index:
            script_keys.append(key)
            index[key] = len(script_keys)
        return index[key]

    argv: list[bytes | str | int] = [
        GROUP, from_consumer, mode, max_attempts, ttl_ms, dead_maxlen, now_ms, reason
    ]  # fmt: skip
    for held in entries:
        result_idx = key_index(keys.result(held.request_id)) if held.request_id else 0
        reply_idx = key_index(keys.reply(held.reply)) if held.request_id and held.reply else 0
        guard_idx = key_index(keys.guard(held.request_id)) if held.request_id else 0
        argv += [held.entry_id, result_idx, reply_idx, held.request_id, guard_idx]
    return script_keys, argv


@dataclass(frozen=True, slots=True)
class Admission:
    """What makes an admit.lua call recognisable when sent twice: the producer's id, this
    call's sequence number and the lowest number the producer may still re-send."""

    producer_id: str
    seq: int
    low: int
    ttl_ms: int


def admit_args(
    keys: QueueKeys,
    entries: list[tuple[int, dict[str, str | bytes | int]]],
    admission: Admission,
    *,
    max_queue_len: int,
    priority: str = DEFAULT_PRIORITY,
) -> tuple[list[str], list[bytes | str | int]]:
    """KEYS and ARGV for admit.lua: add ``entries`` (timeout in ms, 0 = none; fields) to the
    lane ``priority``, bounded by its length; Redis stamps ``enq`` and ``deadline``."""
    argv: list[bytes | str | int] = [
        max_queue_len, admission.seq, admission.low, admission.ttl_ms
    ]  # fmt: skip
    for timeout_ms, fields in entries:
        argv += [timeout_ms, 2 * len(fields)]
        for name, value in fields.items():
            argv += [name, value]
    return [keys.stream_for(priority), keys.admitted(admission.producer_id)], argv


def admit_once_args(
    keys: QueueKeys,
    request_id: str,
    producer_id: str,
    fields: dict[str, str | bytes | int],
    *,
    timeout_ms: int,
    max_queue_len: int,
    guard_ttl_ms: int,
    reply_ttl_ms: int,
    priority: str = DEFAULT_PRIORITY,
) -> tuple[list[str], list[bytes | str | int]]:
    """KEYS and ARGV for admit_once.lua (a submit with a caller-chosen id) into the lane
    ``priority``; the id's result and guard are the queue's, whatever the lane."""
    script_keys = [
        keys.stream_for(priority),
        keys.result(request_id),
        keys.guard(request_id),
        keys.reply(producer_id),
    ]
    argv: list[bytes | str | int] = [
        max_queue_len, producer_id, guard_ttl_ms, reply_ttl_ms, request_id, timeout_ms
    ]  # fmt: skip
    for name, value in fields.items():
        argv += [name, value]
    return script_keys, argv


def leave_args(
    keys: QueueKeys, request_id: str, producer_id: str, *, cancel_ttl_ms: int
) -> tuple[list[str], list[bytes | str | int]]:
    """KEYS and ARGV for leave.lua: ``producer_id`` stops waiting for ``request_id``."""
    return [keys.guard(request_id), keys.cancel(request_id)], [producer_id, cancel_ttl_ms]


def move_due_args(
    keys: QueueKeys, *, now_ms: int, limit: int, dead_maxlen: int
) -> tuple[list[str], list[bytes | str | int]]:
    """KEYS and ARGV for move_due.lua: every lane's stream, with its priority name."""
    script_keys = [keys.delayed, keys.dead, *keys.streams]
    argv: list[bytes | str | int] = [now_ms, limit, dead_maxlen, DEFAULT_PRIORITY, *PRIORITIES]
    return script_keys, argv


def sizes_args(keys: QueueKeys) -> list[str]:
    """KEYS for sizes.lua (no ARGV): every lane's stream, the delayed set, the dead stream."""
    return [*keys.streams, keys.delayed, keys.dead]


def remove_consumer_args(
    keys: QueueKeys, consumer: str
) -> tuple[list[str], list[bytes | str | int]]:
    """KEYS and ARGV for remove_consumer.lua: the heartbeat key, then every lane's stream."""
    return [keys.worker(consumer), *keys.streams], [GROUP, consumer]


def push_outcome_args(
    keys: QueueKeys, request_id: str, producer_ids: list[str], *, ttl_ms: int
) -> tuple[list[str], list[bytes | str | int]]:
    """KEYS and ARGV for push_outcome.lua."""
    script_keys = [keys.result(request_id)] + [keys.reply(p) for p in producer_ids]
    return script_keys, [request_id, ttl_ms]


def followers_of(reply: list[Any], own: dict[str, str]) -> dict[str, list[str]]:
    """Producers to tell, per request id, from finish_batch/requeue replies: guard members
    other than the request's own producer (``own``: request id -> its reply producer), whose
    names are valid producer ids."""
    told: dict[str, list[str]] = {}
    for group in reply:
        request_id = group[0].decode()
        members = {m.decode("ascii", "replace") for m in group[1:]}
        members.discard(own.get(request_id, ""))
        valid = sorted(m for m in members if PRODUCER_ID.fullmatch(m))
        if valid:
            told[request_id] = valid
    return told


def replay_args(
    keys: QueueKeys, dead_entry_id: str, request_id: str, *, now_ms: int
) -> tuple[list[str], list[bytes | str | int]]:
    """KEYS and ARGV for replay.lua: the dead stream, the request's result key, then every
    lane's stream with its priority name (the dead letter's ``priority`` field picks one)."""
    script_keys = [keys.dead, keys.result(request_id), *keys.streams]
    argv: list[bytes | str | int] = [
        dead_entry_id, request_id, now_ms, DEFAULT_PRIORITY, *PRIORITIES
    ]  # fmt: skip
    return script_keys, argv


def _flat(mapping: dict[bytes, bytes]) -> bytes:
    # use_bin_type=False: Redis's cmsgpack cannot decode msgpack "bin"; Lua strings are bytes.
    flat = [part for pair in mapping.items() for part in pair]
    return bytes(msgpack.packb(flat, use_bin_type=False))


def delayed_member(
    fields: dict[bytes, bytes], attempt: int, priority: str = DEFAULT_PRIORITY
) -> bytes:
    """A delayed-set member, as move_due.lua reads: the entry's fields with the next attempt
    and the lane it came from (``priority`` field, left out at normal), so the retry returns
    to that lane."""
    lane: dict[bytes, bytes] = {}
    if check_priority(priority) != DEFAULT_PRIORITY:
        lane[PRIORITY.encode()] = priority.encode()
    rest = {k: v for k, v in fields.items() if k not in (ATTEMPT.encode(), PRIORITY.encode())}
    return _flat({ATTEMPT.encode(): str(attempt).encode(), **lane, **rest})


class Scripts:
    """The registered scripts of one Redis client (no module-level cache: one per client)."""

    def __init__(self, client: Any) -> None:
        self.finish_batch = client.register_script(load_lua("finish_batch"))
        self.requeue = client.register_script(load_lua("requeue"))
        self.admit = packed_script(client, client.register_script(load_lua("admit")))
        self.move_due = client.register_script(load_lua("move_due"))
        self.remove_consumer = client.register_script(load_lua("remove_consumer"))
        self.admit_once = packed_script(client, client.register_script(load_lua("admit_once")))
        self.push_outcome = client.register_script(load_lua("push_outcome"))
        self.replay = client.register_script(load_lua("replay"))
        self.leave = packed_script(client, client.register_script(load_lua("leave")))

    def tell_followers(
        self, keys: QueueKeys, followers: dict[str, list[str]], *, ttl_ms: int
    ) -> None:
        """Producers that submitted the same id while it waited get its stored outcome."""
        for request_id, producers in followers.items():
            script_keys, argv = push_outcome_args(keys, request_id, producers, ttl_ms=ttl_ms)
            self.push_outcome(keys=script_keys, args=argv)
