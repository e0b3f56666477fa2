"""Entry, result and reply records of wire contract v1 (docs/wire-contract.md).

Request entries are flat stream fields; a field at its default is left out. Results are
hashes; replies are msgpack arrays ``[id, status, body]`` where body is the encoded payload
on ``ok`` and the error text otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgpack

from redbatch.errors import MalformedEntry
from redbatch.protocol.codec import CONTENT_TYPES, MSGPACK
from redbatch.protocol.keys import DEFAULT_PRIORITY, PRIORITIES, REQUEST_ID
from redbatch.protocol.records import (
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

# Entry fields.
ID = "id"
REPLY = "reply"
ENQ = "enq"
DEADLINE = "deadline"
ATTEMPT = "attempt"
COST = "cost"
CT = "ct"
PAYLOAD = "payload"
# The request's priority (high|normal|low), left out at normal. The lane (stream) an entry
# sits in is what orders it; the field lets a delayed retry or a dead letter remember it.
PRIORITY = "priority"
# Optional W3C trace context of the producer's submit span (docs/observability.md); workers
# without tracing ignore them, as every reader ignores fields it does not know.
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
# Streaming interest: "1" asks the worker to send a generator handler's chunks to the
# producer as they come (and keep them in rb:{Q}:chunks:<id>); left out otherwise.
STREAM = "stream"

# The delivery count a worker gives the entries of a batch just before it runs them: the
# "started" mark (requeue.lua counts an attempt only against started entries).
STARTED_DELIVERIES = 2

# Outcome statuses; every request ends in exactly one of them.
OK = "ok"
ERROR = "error"
EXPIRED = "expired"
CANCELLED = "cancelled"
DEAD = "dead"
STATUSES = (OK, ERROR, EXPIRED, CANCELLED, DEAD)

# Bounds of an entry (wire contract, "Bounds on entries"): at most MAX_ENTRY_FIELDS fields,
# names of at most MAX_FIELD_NAME_BYTES and values other than the payload of at most
# MAX_FIELD_BYTES (the payload's bound is the worker's max_payload_bytes). Redis accepts any
# XADD; a bigger entry is malformed, dead-lettered as a bounded copy (``bounded_copy``), so
# no script ever handles more than Lua can unpack. requeue.lua and move_due.lua hold the
# same field bound (checked by a test).
MAX_ENTRY_FIELDS = 32
MAX_FIELD_NAME_BYTES = 64
MAX_FIELD_BYTES = 1024

# Producer ids become part of a key name, so they obey the request-id alphabet.
PRODUCER_ID = REQUEST_ID
_MAX_INT_DIGITS = 19


# Not frozen: one is built per request on the hot path, and a frozen dataclass's __init__
# sets each field through object.__setattr__ (4x the cost). Treat it as immutable.
@dataclass(slots=True)
class Request:
    """One request as read from a queue's stream."""

    queue: str
    entry_id: str
    id: str
    payload: bytes
    reply: str = ""
    enq: int = 0
    deadline: int = 0
    attempt: int = 1
    cost: int = 1
    ct: str = MSGPACK
    priority: str = DEFAULT_PRIORITY
    stream: bool = False  # the producer wants the chunks as they come

    def expired(self, now_ms: int) -> bool:
        return self.deadline > 0 and now_ms >= self.deadline


def build_entry(
    request_id: str,
    payload: bytes,
    *,
    reply: str = "",
    enq: int = 0,
    deadline: int = 0,
    attempt: int = 1,
    cost: int = 1,
    ct: str = MSGPACK,
    priority: str = DEFAULT_PRIORITY,
    stream: bool = False,
    trace: Mapping[str, str] | None = None,
) -> dict[str, str | bytes | int]:
    """Stream fields for one request, defaults left out as the contract asks. ``priority``
    is not checked here (the producer checks it); the entry belongs in that lane's stream.
    ``trace``: the ``traceparent``/``tracestate`` fields (redbatch.tracing), if any."""
    fields: dict[str, str | bytes | int] = {ID: request_id}
    if reply:
        fields[REPLY] = reply
    if enq:
        fields[ENQ] = enq
    if deadline:
        fields[DEADLINE] = deadline
    if attempt != 1:
        fields[ATTEMPT] = attempt
    if cost != 1:
        fields[COST] = cost
    if ct != MSGPACK:
        fields[CT] = ct
    if priority != DEFAULT_PRIORITY:
        fields[PRIORITY] = priority
    if stream:
        fields[STREAM] = "1"
    if trace:
        fields.update(trace)
    fields[PAYLOAD] = payload
    return fields


def entry_key(priority: str, entry_id: str) -> str:
    """A name of one stream entry unique among all lanes of its queue.

    Stream entry ids are unique only within one stream: two lanes of a queue routinely hand
    out the same id (same millisecond, same sequence), so anything that holds entries of
    several lanes together must key them by lane and id, never by the id alone."""
    return f"{priority}:{entry_id}"


_B_ID, _B_REPLY, _B_ENQ, _B_DEADLINE, _B_ATTEMPT, _B_COST, _B_CT, _B_PAYLOAD, _B_PRIORITY = (
    name.encode() for name in (ID, REPLY, ENQ, DEADLINE, ATTEMPT, COST, CT, PAYLOAD, PRIORITY)
)
_B_STREAM = STREAM.encode()
# Reply fields already checked: a worker sees the same few producers over and over.
_VALID_REPLIES: set[bytes] = set()
_MAX_VALID_REPLIES = 4096


def entry_request_id(fields: dict[bytes, bytes]) -> str | None:
    """The entry's request id if it is valid, else None (such an entry cannot get a result)."""
    raw = fields.get(_B_ID)
    if raw is None:
        return None
    try:
        request_id = raw.decode("ascii")
    except UnicodeDecodeError:
        return None
    return request_id if REQUEST_ID.fullmatch(request_id) else None


def parse_entry(
    queue: str, entry_id: str, fields: dict[bytes, bytes], lane: str | None = None
) -> Request:
    """Validate a raw stream entry; raises MalformedEntry with the dead-letter reason.

    ``lane``: the priority of the stream the entry was read from; it becomes the request's
    ``priority`` (where the entry lives decides, e.g. one added by hand to the high lane
    without the field). Without it, the ``priority`` field (default normal) is used. A
    ``priority`` field is validated either way."""
    check_bounds(fields)
    request_id = entry_request_id(fields)
    if request_id is None:
        raise MalformedEntry(f"missing or invalid field 'id': {fields.get(_B_ID)!r:.80}")
    payload = fields.get(_B_PAYLOAD)
    if payload is None:
        raise MalformedEntry("missing field 'payload'")
    raw_reply = fields.get(_B_REPLY)
    reply = "" if raw_reply is None else _text(raw_reply, REPLY)
    if reply and raw_reply not in _VALID_REPLIES:
        if not PRODUCER_ID.fullmatch(reply):
            raise MalformedEntry(f"invalid field 'reply': {reply!r:.80}")
        if len(_VALID_REPLIES) >= _MAX_VALID_REPLIES:
            _VALID_REPLIES.clear()
        _VALID_REPLIES.add(raw_reply)  # type: ignore[arg-type]
    raw_ct = fields.get(_B_CT)
    ct = MSGPACK if raw_ct is None else _text(raw_ct, CT)
    if ct not in CONTENT_TYPES:
        raise MalformedEntry(f"invalid field 'ct': {ct!r:.40} (use msgpack or json)")
    raw_priority = fields.get(_B_PRIORITY)
    priority = DEFAULT_PRIORITY if raw_priority is None else _text(raw_priority, PRIORITY)
    if priority not in PRIORITIES:
        raise MalformedEntry(
            f"invalid field 'priority': {priority!r:.40} (use {', '.join(PRIORITIES)})"
        )
    return Request(
        queue,
        entry_id,
        request_id,
        payload,
        reply,
        *_integers(fields),
        ct,
        priority if lane is None else lane,
        fields.get(_B_STREAM) == b"1",  # any other value: no interest (old readers ignore it)
    )


def check_bounds(fields: dict[bytes, bytes]) -> None:
    """MalformedEntry when the entry has more fields, or bigger ones, than the contract allows."""
    if len(fields) > MAX_ENTRY_FIELDS:
        raise MalformedEntry(
            f"{len(fields)} fields: the wire contract allows at most {MAX_ENTRY_FIELDS}"
        )
    for name, value in fields.items():
        if len(name) > MAX_FIELD_NAME_BYTES:
            raise MalformedEntry(
                f"a field name of {len(name)} bytes ({name!r:.40}): at most "
                f"{MAX_FIELD_NAME_BYTES} allowed"
            )
        if len(value) > MAX_FIELD_BYTES and name != _B_PAYLOAD:
            raise MalformedEntry(
                f"field {name.decode('ascii', 'replace')!r} of {len(value)} bytes: at most "
                f"{MAX_FIELD_BYTES} allowed (the payload excepted)"
            )


def bounded_copy(fields: dict[bytes, bytes]) -> dict[bytes, bytes]:
    """What of an entry a dead letter keeps: the first MAX_ENTRY_FIELDS - 1 fields (room
    for ``reason``), names and values other than the payload cut to their bounds; a field
    whose cut name repeats an earlier one is left out."""
    copy: dict[bytes, bytes] = {}
    for name, value in fields.items():
        if len(copy) >= MAX_ENTRY_FIELDS - 1:
            break
        key = name[:MAX_FIELD_NAME_BYTES]
        if key not in copy:
            copy[key] = value if name == _B_PAYLOAD else value[:MAX_FIELD_BYTES]
    return copy


def _text(raw: bytes, name: str) -> str:
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        raise MalformedEntry(f"field {name!r} is not ASCII") from None


# The integer fields of an entry: (name as read, default when absent, least valid value).
_INTEGERS = {
    ENQ: (_B_ENQ, 0, 0),
    DEADLINE: (_B_DEADLINE, 0, 0),
    ATTEMPT: (_B_ATTEMPT, 1, 1),
    COST: (_B_COST, 1, 1),
}


def integer_field(fields: dict[bytes, bytes], name: str) -> int:
    """The entry's integer field ``name`` (enq, deadline, attempt, cost): its default when
    absent or empty; raises MalformedEntry unless it is up to 19 ASCII digits and at least
    the field's minimum. The one rule for every reader of entries."""
    key, default, minimum = _INTEGERS[name]
    raw = fields.get(key)
    if not raw:
        return default
    # The common case without decoding: bytes.isdigit() is true for ASCII digits only, the
    # same rule as the text check below (which is kept for the error message).
    if raw.isdigit() and len(raw) <= _MAX_INT_DIGITS:
        value = int(raw)
        if value >= minimum:
            return value
    text = _text(raw, name)
    if not (text.isdigit() and len(text) <= _MAX_INT_DIGITS) or int(text) < minimum:
        raise MalformedEntry(f"field {name!r} must be an integer >= {minimum}, got {text!r:.40}")
    return int(text)


def _integers(fields: dict[bytes, bytes]) -> tuple[int, int, int, int]:
    """enq, deadline, attempt, cost as ``integer_field`` reads them, in that order; the
    common case (a first attempt at cost 1) without a call per field."""
    enq = fields.get(_B_ENQ)
    deadline = fields.get(_B_DEADLINE)
    if (
        _B_ATTEMPT not in fields
        and _B_COST not in fields
        and (enq is None or (enq.isdigit() and len(enq) <= _MAX_INT_DIGITS))
        and (deadline is None or (deadline.isdigit() and len(deadline) <= _MAX_INT_DIGITS))
    ):  # both minimums are 0: any digits will do
        return (0 if enq is None else int(enq)), (0 if deadline is None else int(deadline)), 1, 1
    return (
        integer_field(fields, ENQ),
        integer_field(fields, DEADLINE),
        integer_field(fields, ATTEMPT),
        integer_field(fields, COST),
    )


def integer_field_or_default(fields: dict[bytes, bytes], name: str) -> int:
    """``integer_field``, with a malformed value counted as the default: for decisions made
    before the entry is parsed (and dead-lettered, if it is malformed)."""
    try:
        return integer_field(fields, name)
    except MalformedEntry:
        return _INTEGERS[name][1]


# Not frozen: one is built per request on the hot path, and a frozen dataclass's __init__
# sets each field through object.__setattr__ (4x the cost). Treat it as immutable.
@dataclass(slots=True)
class Outcome:
    """The final outcome of one request, as a producer receives it."""

    id: str
    status: str
    body: bytes  # encoded payload on ok, UTF-8 error text otherwise

    @property
    def error(self) -> str:
        return self.body.decode("utf-8", "replace")

    def encode_reply(self) -> bytes:
        return bytes(msgpack.packb([self.id, self.status, self.body], use_bin_type=True))


def decode_reply(data: bytes) -> Outcome:
    """Parse one reply-list element; raises ValueError when it is not ``[id, status, body]``.

    raw=True because Lua's cmsgpack (which re-sends a stored outcome) packs every string as
    msgpack "str", binary payloads included: we decode the text parts ourselves.
    """
    try:
        item: Any = msgpack.unpackb(data, raw=True)
    except (ValueError, msgpack.UnpackException) as exc:
        raise ValueError(f"undecodable reply: {exc}") from None
    if not (isinstance(item, list) and len(item) == 3):
        raise ValueError(f"reply is not [id, status, body]: {item!r:.80}")
    raw_id, raw_status, body = item
    if not (type(raw_id) is bytes and type(raw_status) is bytes and type(body) is bytes):
        raise ValueError(f"reply parts are not strings: {item!r:.80}")
    request_id = raw_id.decode("ascii", "replace")
    status = raw_status.decode("ascii", "replace")
    if status not in STATUSES:
        raise ValueError(f"reply has unknown status {status!r}")
    return Outcome(request_id, status, body)


def result_fields(
    outcome: Outcome,
    *,
    ct: str = MSGPACK,
    worker: str = "",
    attempt: int = 1,
    enq: int = 0,
    start: int = 0,
    end: int = 0,
    batch: int = 0,
) -> dict[str, str | bytes | int]:
    """The result hash of one outcome. ``ct`` is stored only when it is not msgpack."""
    fields: dict[str, str | bytes | int] = {RESULT_STATUS: outcome.status}
    if outcome.status == OK:
        fields[RESULT_PAYLOAD] = outcome.body
        if ct != MSGPACK:
            fields[RESULT_CT] = ct
    else:
        fields[RESULT_ERROR] = outcome.body
    fields[RESULT_WORKER] = worker
    fields[RESULT_ATTEMPT] = attempt
    fields[RESULT_ENQ] = enq
    fields[RESULT_START] = start
    fields[RESULT_END] = end
    fields[RESULT_BATCH] = batch
    return fields


_B_STATUS, _B_RESULT_CT, _B_RESULT_PAYLOAD, _B_ERROR = (
    name.encode() for name in (RESULT_STATUS, RESULT_CT, RESULT_PAYLOAD, RESULT_ERROR)
)


def outcome_from_result(request_id: str, fields: dict[bytes, bytes]) -> tuple[Outcome, str]:
    """Rebuild an outcome and its content type from a result hash read back from Redis."""
    status = fields.get(_B_STATUS, b"").decode("ascii", "replace")
    if status not in STATUSES:
        raise ValueError(f"result of {request_id} has unknown status {status!r}")
    ct = fields.get(_B_RESULT_CT, MSGPACK.encode()).decode("ascii", "replace")
    if status == OK:
        return Outcome(request_id, status, fields.get(_B_RESULT_PAYLOAD, b"")), ct
    return Outcome(request_id, status, fields.get(_B_ERROR, b"")), ct
