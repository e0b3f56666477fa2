"""The producer's logic, shared by the sync and asyncio shells: no I/O here.

It builds request entries, names the reply keys, and turns outcomes into values or errors.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Any

from redbatch import tracing
from redbatch.errors import (
    ConfigError,
    PayloadError,
    QueueFull,
    RedbatchError,
    RequestCancelled,
    RequestDead,
    RequestExpired,
    RequestFailed,
)
from redbatch.producer.entries import Submission, new_request_id
from redbatch.producer.options import DEFAULT_TIMEOUT_S, check_flag, check_timeout
from redbatch.protocol import codec
from redbatch.protocol.fields import (
    CANCELLED,
    DEAD,
    EXPIRED,
    OK,
    Outcome,
    build_entry,
    decode_reply,
    outcome_from_result,
)
from redbatch.protocol.keys import (
    DEFAULT_PRIORITY,
    KeySpace,
    QueueKeys,
    check_priority,
    check_request_id,
)
from redbatch.protocol.scripts import Admission, admit_args, admit_once_args, leave_args
from redbatch.transport.connection import connection_name

log = logging.getLogger(__name__)

# How long a request submitted with its own id guards that id against a second run while it
# waits or runs (the first outcome ends the guard; this only bounds a leak if all else dies).
GUARD_TTL_MS = 24 * 3_600_000
# TTL of a reply pushed at admission from a stored result (the workers' default result TTL).
REPLY_TTL_MS = 3_600_000

# The reply listener pops up to this many outcomes per round trip.
REPLY_BATCH = 512
# Upper bound of one blocking pop: the listener also wakes at once when a queue is added
# or the producer closes (see WAKE); this only bounds how long a lost wake could cost.
LISTEN_TIMEOUT_S = 5.0
# Read timeout of the listener's connection: longer than its blocking pop, so an empty pop
# ends with Redis's empty answer, never with a socket TimeoutError (then retries and a pause).
LISTEN_SOCKET_TIMEOUT_S = LISTEN_TIMEOUT_S + 5.0
# redis-py retries of one listener command (reconnects with exponential backoff and jitter,
# see connection.backoff_retry) before the listener loop takes over: bounded, so a closing
# producer's listener sees the stop within a few seconds even while Redis is down.
LISTEN_RETRIES = 3
# A waiting handle's stored result is read back after an outage in rounds of this many.
RECOVER_BATCH = 512
# A reply element with an empty request id: pushed by a producer onto its own reply list to
# wake its listener when it starts using a new queue. Request ids are never empty.
WAKE = Outcome("", OK, b"").encode_reply()
# TTL of a reply list that only ever held a wake marker (ms): it must not outlive us for long.
WAKE_TTL_MS = 3_600_000
# Requests one lane (priority stream) of a queue may hold, waiting or in flight, before a
# submit to it raises QueueFull: each lane has its own bound, so a flood of low-priority
# requests never refuses a high one (the queue as a whole holds at most 3x this).
DEFAULT_MAX_QUEUE_LEN = 100_000
# TTL of a cancel key (ms). Nothing deletes these keys, so they must expire by themselves;
# an hour outlives any reasonable wait in a queue. Workers only test for their presence.
CANCEL_TTL_MS = 3_600_000
CANCEL_MARK = "1"


def new_producer_id() -> str:
    return f"p{uuid.uuid4().hex}"


class ProducerCore:
    """What a producer knows: its id, namespace, codec settings and the queues it uses.

    ``max_queue_len``: requests one priority lane of a queue may hold (waiting or in flight)
    before a submit to that lane raises QueueFull (0 = no bound); each lane is bounded by
    itself. ``cancel_on_timeout``: a ``result``, ``call`` or ``map`` whose local wait times
    out cancels its requests; ``cancel_on_cancel`` (asyncio): so does a waiting task that is
    cancelled. ``default_timeout`` (s): a call's timeout when it passes none (None: wait for
    ever). ``require_worker``: submits raise NoWorker when no live worker serves the queue.
    ``encoder``/``decoder``: hooks of the codec (``protocol.codec.encode``/``decode``) for
    payloads and results. ``metrics``: a Prometheus ``CollectorRegistry`` to count on (True:
    the default registry; needs prometheus_client)."""

    def __init__(
        self,
        namespace: str = "rb",
        *,
        content_type: str = codec.MSGPACK,
        max_payload_bytes: int = codec.DEFAULT_LIMITS.max_payload_bytes,
        max_queue_len: int = DEFAULT_MAX_QUEUE_LEN,
        cancel_on_timeout: bool = True,
        cancel_on_cancel: bool = True,
        default_timeout: float | None = DEFAULT_TIMEOUT_S,
        require_worker: bool = False,
        name: str | None = None,
        encoder: codec.Encoder | None = None,
        decoder: codec.Decoder | None = None,
        metrics: Any = None,
    ) -> None:
        self.keyspace = KeySpace(namespace)
        self.producer_id = new_producer_id()
        if name is not None and (not isinstance(name, str) or not name or " " in name):
            raise ConfigError(f"name must be a non-empty string without spaces, got {name!r}")
        # What its connections call themselves (CLIENT SETNAME), e.g. redbatch:producer:<name>.
        self.name = name or self.producer_id
        self.content_type = codec.check_content_type(content_type)
        self.limits = codec.Limits(max_payload_bytes)
        self.max_queue_len = check_max_queue_len(max_queue_len)
        self.cancel_on_timeout = check_flag("cancel_on_timeout", cancel_on_timeout)
        self.cancel_on_cancel = check_flag("cancel_on_cancel", cancel_on_cancel)
        self.require_worker = check_flag("require_worker", require_worker)
        self.default_timeout = None if default_timeout is None else check_timeout(default_timeout)
        self.encoder = encoder
        self.decoder = decoder
        self.metrics = producer_metrics(metrics)
        self._queues: dict[str, QueueKeys] = {}

    def timeout(self, timeout: float | None) -> float | None:
        """A call's timeout: its own, else the producer's default."""
        return self.default_timeout if timeout is None else timeout

    def client_name(self, role: str) -> str:
        """The ``CLIENT SETNAME`` of this producer's connections of ``role`` (``producer``,
        ``listener``), so ``CLIENT LIST`` tells them from a worker's."""
        return connection_name(role, self.name)

    def queue_keys(self, queue: str) -> QueueKeys:
        """The keys of ``queue`` (its name checked once, not per request)."""
        keys = self._queues.get(queue)
        if keys is None:
            keys = self._queues[queue] = self.keyspace.queue(queue)
        return keys

    def reply_key(self, queue: str) -> str:
        return self.queue_keys(queue).reply(self.producer_id)

    def submission(
        self,
        queue: str,
        payload: Any,
        *,
        request_id: str | None = None,
        timeout: float | None = None,
        cost: int = 1,
        priority: str = DEFAULT_PRIORITY,
        stream: bool = False,
    ) -> Submission:
        """One request's entry, checked, encoded and built (``submissions`` with one
        payload and, optionally, its own id)."""
        checked = check_request_id(request_id) if request_id is not None else None
        [sub] = self.submissions(
            queue, [payload], [cost], timeout=timeout, priority=priority, stream=stream,
            request_id=checked,
        )  # fmt: skip
        return sub

    def submissions(
        self,
        queue: str,
        payloads: Sequence[Any],
        costs: Sequence[int],
        *,
        timeout: float | None = None,
        priority: str = DEFAULT_PRIORITY,
        stream: bool = False,
        request_id: str | None = None,
    ) -> list[Submission]:
        """The one place entries are built: every argument checked and every payload
        encoded before any is sent (one msgpack Packer for them all: ``packb`` builds one
        per call, which costs more than packing a small payload). ``costs`` in payload
        order; ``request_id`` (checked by the caller) only for a single payload."""
        keys = self.queue_keys(queue)  # checks the queue name
        if priority != DEFAULT_PRIORITY:
            check_priority(priority)
        for cost in costs:
            if isinstance(cost, bool) or not isinstance(cost, int) or cost < 1:
                raise ConfigError(f"cost must be a positive integer, got {cost!r}")
        if timeout is not None and not timeout > 0:
            raise ConfigError(f"timeout must be a positive number of seconds, got {timeout!r}")
        timeout_ms = max(1, round(timeout * 1000)) if timeout is not None else 0
        ct = self.content_type
        encoded: list[bytes] = []
        for blob in codec.encode_many(payloads, [ct] * len(payloads), self.limits, self.encoder):
            if isinstance(blob, PayloadError):
                raise blob  # the first payload that cannot be encoded; nothing was sent
            encoded.append(blob)
        name, reply = keys.name, self.producer_id
        subs = []
        for data, cost in zip(encoded, costs, strict=True):
            rid = request_id if request_id is not None else new_request_id()
            fields = build_entry(
                rid, data, reply=reply, cost=cost, ct=ct, priority=priority,
                stream=stream, trace=tracing.entry_fields(name, rid),
            )  # fmt: skip
            subs.append(Submission(name, rid, fields, priority, timeout_ms))
        return subs

    def admit_call(
        self, subs: list[Submission], admission: Admission
    ) -> tuple[list[str], list[bytes | str | int]]:
        """KEYS and ARGV of the one admit.lua call that adds ``subs`` (all of one queue and
        one priority) to that priority's lane, within the lane's ``max_queue_len``."""
        first = subs[0]
        if any(s.queue != first.queue or s.priority != first.priority for s in subs):
            raise ValueError("one admission takes requests of one queue and one priority")
        return admit_args(
            self.queue_keys(first.queue),
            [(s.timeout_ms, s.fields) for s in subs],
            admission,
            max_queue_len=self.max_queue_len,
            priority=first.priority,
        )

    def admit_once_call(self, sub: Submission) -> tuple[list[str], list[bytes | str | int]]:
        """KEYS and ARGV of admit_once.lua: a request whose id the caller chose. An id that is
        waiting, running or finished (within the result TTL) is not run again: this caller
        gets the same outcome."""
        return admit_once_args(
            self.queue_keys(sub.queue),
            sub.request_id,
            self.producer_id,
            sub.fields,
            timeout_ms=sub.timeout_ms,
            max_queue_len=self.max_queue_len,
            guard_ttl_ms=GUARD_TTL_MS,
            reply_ttl_ms=REPLY_TTL_MS,
            priority=sub.priority,
        )

    def admission(
        self, subs: list[Submission], *, once: bool, admission: Admission
    ) -> tuple[str, list[str], list[bytes | str | int]]:
        """The admission script to call (``admit``, or ``admit_once`` for a single request
        with a caller-chosen id, whose guard makes it idempotent), with its keys and
        arguments."""
        if once:
            return ("admit_once", *self.admit_once_call(subs[0]))
        return ("admit", *self.admit_call(subs, admission))

    def leave_call(self, queue: str, request_id: str) -> tuple[list[str], list[bytes | str | int]]:
        """KEYS and ARGV of leave.lua: this producer stops waiting for ``request_id``."""
        return leave_args(
            self.queue_keys(queue), request_id, self.producer_id, cancel_ttl_ms=CANCEL_TTL_MS
        )

    def refusal(self, queue: str, reply: Any, priority: str = DEFAULT_PRIORITY) -> QueueFull | None:
        """None when admit.lua / admit_once.lua took the requests (``[1, ids...]`` added,
        ``[2]`` answered from the stored result, ``[3]`` joined the waiting request, ``[4]``
        added by an earlier send of this same admission); the
        QueueFull to raise when refused (``[0, length]``: the length of the lane
        ``priority``)."""
        if not isinstance(reply, list) or not reply or reply[0] not in (0, 1, 2, 3, 4):
            raise RedbatchError(f"unexpected reply from admission: {reply!r:.80}")
        if reply[0] != 0:
            return None
        return QueueFull(queue, int(reply[1]), self.max_queue_len, priority)

    def cancel_keys(self, queue: str, request_ids: list[str]) -> list[str]:
        keys = self.queue_keys(queue)
        return [keys.cancel(check_request_id(request_id)) for request_id in request_ids]

    def value(self, outcome: Outcome, ct: str) -> Any:
        """The request's result, or raise the error its outcome stands for."""
        if outcome.status == OK:
            return codec.decode(outcome.body, ct, self.limits, self.decoder)
        raise outcome_error(outcome)


def producer_metrics(metrics: Any) -> Any:
    """The producer's Prometheus metrics (``producer.metrics``, imported only when asked
    for), or None."""
    if metrics is None or metrics is False:
        return None
    from redbatch.producer.metrics import ProducerMetrics  # noqa: PLC0415 - optional

    return ProducerMetrics(None if metrics is True else metrics)


def check_max_queue_len(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"max_queue_len must be an integer >= 0 (0 = no bound), got {value!r}")
    return value


def outcome_error(outcome: Outcome) -> RedbatchError:
    if outcome.status == EXPIRED:
        return RequestExpired(outcome.id, outcome.error)
    if outcome.status == CANCELLED:
        return RequestCancelled(outcome.id, outcome.error)
    if outcome.status == DEAD:
        return RequestDead(outcome.id, outcome.error)
    return RequestFailed(outcome.id, outcome.error)


def read_replies(items: list[bytes]) -> list[Outcome]:
    """Outcomes from popped reply elements; wake markers and unreadable ones are skipped."""
    outcomes = []
    for raw in items:
        try:
            outcome = decode_reply(raw)
        except ValueError as exc:
            log.warning("ignoring unreadable reply: %s", exc)
            continue
        if outcome.id:  # an empty id is a wake marker
            outcomes.append(outcome)
    return outcomes


def stored_outcome(request_id: str, fields: dict[bytes, bytes]) -> Outcome | None:
    """The outcome in a result hash read back for a waiting request; None while it has none
    (not finished, lost with a Redis restart, or past its TTL)."""
    if not fields:
        return None
    try:
        return outcome_from_result(request_id, fields)[0]
    except ValueError as exc:
        log.warning("ignoring unreadable result: %s", exc)
        return None


class Outage:
    """The reply listener's view of Redis: one warning when it is lost, one info line when
    it is back, however many reconnect attempts came in between."""

    def __init__(self) -> None:
        self.active = False

    def lost(self, exc: BaseException) -> None:
        if not self.active:
            self.active = True
            log.warning(
                "reply listener: Redis unavailable (%s); reconnecting with backoff, "
                "waiting requests keep waiting",
                first_line(exc),
            )

    def back(self, recovered: int) -> None:
        if self.active:
            self.active = False
            log.info(
                "reply listener: Redis reachable again; %d waiting request(s) answered "
                "from stored results",
                recovered,
            )


def first_line(exc: BaseException) -> str:
    """The first line of an error's text (its type's name when it has none), for logs."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
