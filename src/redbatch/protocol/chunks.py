"""Chunk records of streaming requests (docs/wire-contract.md, "Streaming").

A generator handler's chunk travels twice: pushed onto its producer's reply list as a
msgpack array ``[id, "chunk", attempt, seq, body]`` (``[id, "end", attempt, seq, ""]`` once
``Final`` ended the item) (beside the final ``[id, status, body]``
replies: a reader tells them apart by the length and the second part), and kept as entry
``<attempt>-<seq>`` (field ``chunk``) of the stream ``rb:{Q}:chunks:<id>``, so it can be
read again from any sequence number: ``XRANGE rb:{Q}:chunks:<id> <attempt>-<seq> +``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import msgpack

from redbatch.protocol.fields import Outcome, decode_reply
from redbatch.protocol.keys import QueueKeys

log = logging.getLogger(__name__)

CHUNK = "chunk"  # the reply record's tag, and the chunk stream entry's one field
# The tag (and field) of an item's end mark: ``Final`` ended it; no more chunks of this
# attempt follow. Its seq is the number of chunks before it; its body is empty.
END = "end"
_B_CHUNK, _B_END = CHUNK.encode(), END.encode()


@dataclass(frozen=True, slots=True)
class Chunk:
    """One piece of a streaming request's output: ``seq`` counts from 0 in each attempt."""

    id: str
    attempt: int
    seq: int
    body: bytes  # encoded with the request's content type
    end: bool = False  # the end mark: the item ended (its result comes with the batch's)

    @property
    def tag(self) -> str:
        return END if self.end else CHUNK

    def encode_reply(self) -> bytes:
        record = [self.id, self.tag, self.attempt, self.seq, self.body]
        return bytes(msgpack.packb(record, use_bin_type=True))


def entry_id(attempt: int, seq: int) -> str:
    """The chunk stream entry id of a chunk: ordered by attempt, then sequence number."""
    return f"{attempt}-{seq}"


def decode_record(data: bytes) -> Outcome | Chunk:
    """A reply-list element: a final outcome or a chunk; ValueError when it is neither."""
    try:
        item: Any = msgpack.unpackb(data, raw=True)
    except (ValueError, msgpack.UnpackException) as exc:
        raise ValueError(f"undecodable reply: {exc}") from None
    if isinstance(item, list) and len(item) == 5 and item[1] in (_B_CHUNK, _B_END):
        raw_id, tag, attempt, seq, body = item
        if type(raw_id) is bytes and type(body) is bytes and _counts(attempt, seq):
            return Chunk(raw_id.decode("ascii", "replace"), attempt, seq, body, tag == _B_END)
        raise ValueError(f"chunk record is not [id, chunk, attempt, seq, body]: {item!r:.80}")
    return decode_reply(data)


def split_records(items: list[bytes]) -> tuple[list[Outcome], dict[str, list[Chunk]]]:
    """Popped reply-list elements as final outcomes and chunks by request id (each request's
    in arrival order). Wake markers (an empty id) and unreadable elements are skipped."""
    outcomes: list[Outcome] = []
    chunks: dict[str, list[Chunk]] = {}
    for raw in items:
        try:
            record = decode_record(raw) if raw[:1] == b"\x95" else decode_reply(raw)
        except (ValueError, IndexError) as exc:
            log.warning("ignoring unreadable reply: %s", exc, extra={"event": "reply_unreadable"})
            continue
        if isinstance(record, Chunk):
            chunks.setdefault(record.id, []).append(record)
        elif record.id:
            outcomes.append(record)
    return outcomes, chunks


def _counts(attempt: Any, seq: Any) -> bool:
    return type(attempt) is int and type(seq) is int and attempt >= 1 and seq >= 0


def chunks_from_entries(request_id: str, entries: list[Any]) -> list[Chunk]:
    """Chunks from ``XRANGE``/``XREAD`` entries of a chunk stream; unreadable ones skipped."""
    found = []
    for raw_id, fields in entries:
        text = raw_id.decode("ascii", "replace") if isinstance(raw_id, bytes) else str(raw_id)
        attempt, _, seq = text.partition("-")
        body = fields.get(_B_CHUNK, fields.get(_B_END))
        if attempt.isdigit() and seq.isdigit() and isinstance(body, bytes):
            found.append(Chunk(request_id, int(attempt), int(seq), body, _B_END in fields))
    return found


@dataclass(slots=True)
class StepChunk:
    """One chunk a step produced, before it is sent: the request's position among the
    step's running requests (whose cancel keys the call checks), its reply list."""

    position: int  # 0-based among the running requests
    request_id: str
    reply: str
    chunk: Chunk


def push_chunks_args(
    keys: QueueKeys,
    running: list[str],
    chunks: list[StepChunk],
    *,
    ttl_ms: int,
) -> tuple[list[str], list[bytes | str | int]]:
    """KEYS and ARGV for push_chunks.lua: ``running`` are the ids of the requests still
    running (their cancel keys are checked), ``chunks`` this step's chunks."""
    script_keys = [keys.cancel(request_id) for request_id in running]
    argv: list[bytes | str | int] = [ttl_ms, len(running)]
    index: dict[str, int] = {}

    def key_index(key: str) -> int:
        at = index.get(key)
        if at is None:
            script_keys.append(key)
            at = index[key] = len(script_keys)  # Lua's KEYS is 1-based
        return at

    for item in chunks:
        chunk = item.chunk
        reply = key_index(keys.reply(item.reply)) if item.reply else 0
        argv += [
            item.position + 1, key_index(keys.chunks(item.request_id)), reply,
            chunk.id, chunk.attempt, chunk.seq, chunk.tag, chunk.body,
        ]  # fmt: skip
    return script_keys, argv
