"""Lua scripts of the wire contract, and the pure code that builds their KEYS and ARGV.

Scripts live as ``lua/*.lua`` files whose header documents KEYS, ARGV and the reply. Every key
a script touches arrives through KEYS and carries the queue's ``{Q}`` hash tag.

A script that works on entries of one lane (finish_batch, requeue, admit, admit_once) takes
that lane's stream as KEYS[1] (``priority``, default normal); a batch or hand-back that mixes
lanes is one call per lane. Scripts about the whole queue (move_due, remove_consumer) get
every lane's stream. finish_batch's arguments are built in ``redbatch.protocol.finish_args``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import msgpack

from redbatch.protocol.fields import (
    ATTEMPT,
    PRIORITY,
    PRODUCER_ID,
    REPLY,
    entry_request_id,
)
from redbatch.protocol.keys import DEFAULT_PRIORITY, GROUP, PRIORITIES, QueueKeys, check_priority
from redbatch.transport.deferred import packed_script


def load_lua(name: str) -> str:
    return resources.files("redbatch.protocol").joinpath("lua", f"{name}.lua").read_text()


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
