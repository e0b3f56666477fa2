"""Pure rendering shared by ``redbatch inspect`` and ``redbatch dlq``: raw stream fields and
result hashes to readable text and JSON-ready values, decoded payloads, times.

No Redis here: every function takes what was read and returns plain values, so it is unit
tested without a server.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from redbatch.clock import now_ms
from redbatch.errors import PayloadError
from redbatch.protocol.codec import CONTENT_TYPES, MSGPACK, Limits, decode
from redbatch.protocol.fields import CT, PAYLOAD

# Text output shortens long payloads (JSON output never does): a list or map shows this many
# items, a string this many characters, then says how much more there is.
TEXT_ITEMS = 20
TEXT_CHARS = 400
# A delayed retry this late says no scheduler moves retries (a pass is every second or so).
OVERDUE_MS = 5000
# A payload whose JSON is at most this long is printed on one line, else indented.
ONE_LINE = 80
# Stream entry ids are "<ms>-<seq>".
_SEP = "-"


def text(value: bytes | str | None, default: str = "") -> str:
    if value is None:
        return default
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def number(value: bytes | str | None, default: int = 0) -> int:
    """An integer field, or ``default`` when it is missing or not a plain integer."""
    raw = text(value)
    return int(raw) if raw.isdigit() and len(raw) <= 19 else default


def entry_ms(entry_id: str) -> int:
    """The millisecond time of a stream entry id (``1718000000000-3`` -> 1718000000000)."""
    head = entry_id.partition(_SEP)[0]
    return int(head) if head.isdigit() else 0


def is_entry_id(value: str) -> bool:
    """True for what looks like a full stream entry id (``<ms>-<seq>``)."""
    head, sep, tail = value.partition(_SEP)
    return bool(sep) and head.isdigit() and tail.isdigit()


def decoded_fields(fields: dict[bytes, bytes]) -> dict[str, str]:
    """Every field but the payload, as text (entry fields are ASCII by contract; anything
    else is shown with replacement characters rather than refused)."""
    return {text(k): text(v) for k, v in fields.items() if k != PAYLOAD.encode()}


# -- payloads -----------------------------------------------------------------------------------


def payload_view(data: bytes, ct: str) -> dict[str, Any]:
    """A decoded payload as a JSON-ready description: ``{"ct", "bytes", "value"}`` or, when it
    cannot be decoded, ``{"ct", "bytes", "undecodable": reason}``. numpy arrays become
    ``{"ndarray": {"dtype", "shape"}}`` (their values are not printed)."""
    view: dict[str, Any] = {"ct": ct, "bytes": len(data)}
    if ct not in CONTENT_TYPES:
        view["undecodable"] = f"unknown content type {ct!r}"
        return view
    try:
        # Operators look at whatever is stored: the size limit is the data's own.
        value = decode(data, ct, Limits(max(1, len(data))))
    except PayloadError as exc:
        view["undecodable"] = str(exc)
        return view
    view["value"] = jsonable(value)
    return view


def jsonable(value: Any) -> Any:
    """A decoded payload turned into what ``json.dumps`` takes: arrays summarised, bytes
    shown as text when they are UTF-8 (else as their size), map keys as strings."""
    if isinstance(value, dict):
        return {_key(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, bytes):
        return _bytes(value)
    if _is_ndarray(value):
        return {"ndarray": {"dtype": str(value.dtype), "shape": list(value.shape)}}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return repr(value)


def _bytes(value: bytes) -> Any:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return {"bytes": len(value)}


def _key(key: Any) -> str:
    return key if isinstance(key, str) else json.dumps(jsonable(key))


def _is_ndarray(value: Any) -> bool:
    return type(value).__module__ == "numpy" and hasattr(value, "shape")


def shorten(value: Any) -> Any:
    """A JSON-ready value cut for text output: long lists, maps and strings end with a
    ``"... N more"`` marker."""
    if isinstance(value, dict):
        items = list(value.items())
        out = {k: shorten(v) for k, v in items[:TEXT_ITEMS]}
        if len(items) > TEXT_ITEMS:
            out["..."] = f"{len(items) - TEXT_ITEMS} more"
        return out
    if isinstance(value, list):
        head = [shorten(v) for v in value[:TEXT_ITEMS]]
        if len(value) > TEXT_ITEMS:
            head.append(f"... {len(value) - TEXT_ITEMS} more")
        return head
    if isinstance(value, str) and len(value) > TEXT_CHARS:
        return f"{value[:TEXT_CHARS]}... ({len(value) - TEXT_CHARS} more characters)"
    return value


def payload_lines(view: dict[str, Any], indent: str = "  ") -> list[str]:
    """Text lines for ``payload_view`` output: a header, then the value pretty-printed."""
    head = f"payload ({view['ct']}, {view['bytes']} bytes)"
    if "undecodable" in view:
        return [f"{head}: undecodable: {view['undecodable']}"]
    lines = pretty(shorten(view["value"]))
    if len(lines) == 1 and len(lines[0]) <= ONE_LINE:
        return [f"{head}: {lines[0]}"]
    return [f"{head}:", *(indent + line for line in lines)]


def pretty(value: Any, width: int = ONE_LINE) -> list[str]:
    """JSON-ish text of a ``jsonable`` value: what fits in ``width`` stays on one line, the
    rest is broken up one item per line, indented by two; arrays read ``<ndarray float32
    2x384>``."""
    one = _compact(value)
    if len(one) <= width or not isinstance(value, dict | list) or _ndarray_of(value):
        return [one]
    if isinstance(value, list) and not any(isinstance(v, dict | list) for v in value):
        return _filled(value, width)
    if isinstance(value, dict):
        items = [(json.dumps(k, ensure_ascii=False) + ": ", v) for k, v in value.items()]
        opening, closing = "{", "}"
    else:
        items = [("", v) for v in value]
        opening, closing = "[", "]"
    lines = [opening]
    for n, (label, item) in enumerate(items):
        inner = pretty(item, width - 2)
        inner[0] = label + inner[0]
        if n < len(items) - 1:
            inner[-1] += ","
        lines += ["  " + line for line in inner]
    return [*lines, closing]


def _filled(scalars: list[Any], width: int) -> list[str]:
    """A long list of scalars, as many per line as fit."""
    lines, line = ["["], ""
    for n, item in enumerate(scalars):
        piece = _compact(item) + ("," if n < len(scalars) - 1 else "")
        if line and len(line) + 1 + len(piece) > width - 2:
            lines.append("  " + line)
            line = ""
        line = f"{line} {piece}" if line else piece
    return [*lines, "  " + line, "]"]


def _compact(value: Any) -> str:
    array = _ndarray_of(value)
    if array is not None:
        shape = "x".join(str(n) for n in array.get("shape", [])) or "scalar"
        return f"<ndarray {array.get('dtype')} {shape}>"
    if isinstance(value, dict):
        inner = ", ".join(
            f"{json.dumps(k, ensure_ascii=False)}: {_compact(v)}" for k, v in value.items()
        )
        return "{" + inner + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_compact(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def _ndarray_of(value: Any) -> dict[str, Any] | None:
    """The ``{"dtype", "shape"}`` of an array summary made by ``jsonable``, else None."""
    if isinstance(value, dict) and len(value) == 1 and isinstance(value.get("ndarray"), dict):
        return dict(value["ndarray"])
    return None


def entry_payload(fields: dict[bytes, bytes]) -> dict[str, Any] | None:
    """The decoded payload of a request entry (or dead letter), None if it has none."""
    data = fields.get(PAYLOAD.encode())
    if data is None:
        return None
    return payload_view(data, text(fields.get(CT.encode()), MSGPACK))


# -- times --------------------------------------------------------------------------------------


def when(ms: int, now: int | None = None) -> str:
    """``2024-06-01T12:00:00.123+02:00 (3.2 s ago)``; ``-`` for 0 (unknown)."""
    if ms <= 0:
        return "-"
    stamp = datetime.fromtimestamp(ms / 1000).astimezone().isoformat(timespec="milliseconds")
    return f"{stamp} ({relative(ms - (now_ms() if now is None else now))})"


def relative(delta_ms: int) -> str:
    """``3.2 s ago`` for a negative delta, ``in 5 m 0 s`` for a positive one."""
    span = duration(abs(delta_ms))
    return f"in {span}" if delta_ms > 0 else f"{span} ago"


def duration(ms: int) -> str:
    """``850 ms``, ``3.2 s``, ``4 m 5 s``, ``2 h 3 m``, ``3 d 4 h``."""
    if ms < 1000:
        return f"{ms} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} m {sec} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} m"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


# -- sightings (``find``) as text --------------------------------------------------------


def sighting_lines(s: dict[str, Any], now: int) -> list[str]:
    """The text lines of one sighting: a headline, then indented details."""
    render = _RENDERERS.get(s["state"])
    return render(s, now) if render else [f"{s['state']}"]


def _entry_line(s: dict[str, Any], now: int, attempt_note: str = "") -> str:
    parts = [f"attempt {s['attempt']}{attempt_note}", f"lane {s['lane']}"]
    if s.get("entry_id"):
        parts.append(f"entry {s['entry_id']}")
    if s.get("enq_ms"):
        parts.append(f"enqueued {when(s['enq_ms'], now)}")
    replayed = s.get("fields", {}).get("replayed")
    if replayed:
        parts.append(f"replayed {replayed} times")
    return "    " + ", ".join(parts)


def _waiting(s: dict[str, Any], now: int) -> list[str]:
    return [f"  waiting in lane {s['lane']} since {when(s['since_ms'], now)}", _entry_line(s, now)]


def _held(s: dict[str, Any], now: int) -> list[str]:
    alive = "heartbeat alive" if s["worker_alive"] else "no heartbeat: the scheduler re-queues it"
    started = (
        f" (started: delivered {s['deliveries']} times)"
        if s["started"]
        else " (read, not started yet)"
    )
    return [
        f"  held by worker {s['consumer']} ({alive}) since {when(s['held_since_ms'], now)}",
        _entry_line(s, now, started),
    ]


def _delayed(s: dict[str, Any], now: int) -> list[str]:
    overdue = now - s["due_ms"] > OVERDUE_MS
    note = ": overdue, is a scheduler running?" if overdue else ""
    return [f"  delayed: retry due {when(s['due_ms'], now)}{note}", _entry_line(s, now)]


def _expiry(ttl_ms: int | None) -> str:
    return "never expires" if ttl_ms is None else f"expires in {duration(ttl_ms)}"


def _finished(s: dict[str, Any], now: int) -> list[str]:
    by = f" by worker {s['worker']}" if s["worker"] else ""
    lines = [f"  finished {s['status']}{by} at {when(s['end_ms'], now)}"]
    details = [f"attempt {s['attempt']}"]
    if s["batch"]:
        details.append(f"batch of {s['batch']}")
    if s["start_ms"] and s["end_ms"]:
        details.append(f"ran {duration(max(0, s['end_ms'] - s['start_ms']))}")
    details.append(f"result {_expiry(s['expires_in_ms'])}")
    lines.append("    " + ", ".join(details))
    if "error" in s:
        lines.append(f"    error: {s['error']}")
    if "payload" in s:
        lines += ["    " + line for line in payload_lines(s["payload"])]
    return lines


def _cancelled(s: dict[str, Any], now: int) -> list[str]:
    return [f"  cancelled (cancel key set, {_expiry(s['expires_in_ms'])})"]


def _dead(s: dict[str, Any], now: int) -> list[str]:
    return [
        f"  dead since {when(s['dead_at_ms'], now)} (dead letter {s['dead_entry_id']})",
        f"    reason: {s['reason']}",
        _entry_line(s, now),
    ]


_RENDERERS = {
    "waiting": _waiting,
    "held": _held,
    "delayed": _delayed,
    "finished": _finished,
    "cancelled": _cancelled,
    "dead": _dead,
}
