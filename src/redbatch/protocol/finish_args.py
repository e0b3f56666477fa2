"""KEYS and ARGV of finish_batch.lua (protocol/lua/finish_batch.lua documents them): what a
batch's outcomes become on the wire. Pure code, no Redis; ``redbatch.protocol.scripts``
re-exports it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import msgpack

from redbatch.protocol.codec import MSGPACK
from redbatch.protocol.fields import OK, Outcome
from redbatch.protocol.keys import DEFAULT_PRIORITY, GROUP, QueueKeys
from redbatch.protocol.records import DEAD_REASON


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


class ShortItem(Facts, Protocol):
    """A request that ran, as the short form needs it (a ``Request`` is one)."""

    @property
    def entry_id(self) -> str: ...
    @property
    def reply(self) -> str: ...


def finish_batch_args(
    keys: QueueKeys,
    items: list[Finished],
    *,
    ttl_ms: int,
    dead_maxlen: int,
    priority: str = DEFAULT_PRIORITY,
    common: dict[str, str | int] | None = None,
    short: Sequence[tuple[ShortItem, Outcome]] = (),
) -> tuple[list[str], list[bytes | str | int]]:
    """KEYS and ARGV for finish_batch.lua: ``items`` all read from the lane ``priority``;
    ``common`` holds the result fields shared by the short-form items: those given with
    ``facts``, and ``short`` (request, outcome) pairs, sent first and built column-wise
    with no ``Finished`` each (the hot path: a batch's requests that ran)."""
    script_keys = [keys.stream_for(priority), keys.dead, keys.delayed]
    reply_keys: dict[str, int] = {}
    with_outcome = [o.id for _, o in short]
    with_outcome += [i.outcome.id for i in items if i.outcome is not None and not i.due_ms]
    argv: list[bytes | str | int] = [GROUP, ttl_ms, dead_maxlen, len(with_outcome)]
    argv += _values(common or {})
    first_reply = len(script_keys) + 2 * len(with_outcome) + 1  # Lua's KEYS is 1-based
    result_at, guard_at = keys.result(""), keys.guard("")
    # Each outcome's result and guard keys, interleaved without a list per request.
    pairs: list[str] = [""] * (2 * len(with_outcome))
    pairs[0::2] = [result_at + request_id for request_id in with_outcome]
    pairs[1::2] = [guard_at + request_id for request_id in with_outcome]
    script_keys += pairs

    def reply_index(producer: str) -> int:
        at = reply_keys.get(producer)
        if at is None:
            at = reply_keys[producer] = first_reply + len(reply_keys)
        return at

    _short_args(argv, short, reply_index)
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


def _short_args(
    argv: list[bytes | str | int],
    short: Sequence[tuple[ShortItem, Outcome]],
    reply_index: Callable[[str], int],
) -> None:
    """The ``r`` items of ``short``, appended to ``argv`` in one pass. One msgpack Packer
    per call (``packb`` builds one per reply record)."""
    pack = msgpack.Packer(use_bin_type=True).pack
    # A batch's requests come from a few producers: their indexes looked up, not computed.
    indexes = {"": 0}  # no reply: 0
    for request, outcome in short:
        status, body, reply = outcome.status, outcome.body, request.reply
        ct = request.ct
        at = indexes.get(reply)
        if at is None:
            at = indexes[reply] = reply_index(reply)
        argv += (
            "r", request.entry_id, outcome.id, at,
            pack([outcome.id, status, body]), status, body, request.attempt, request.enq,
            ct if ct != MSGPACK and status == OK else "",
        )  # fmt: skip
