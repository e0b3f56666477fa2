"""Each Redis interaction of a producer as a plan: the commands to send and the parser of
their replies, built once. The sync and asyncio shells only run plans (``Runner``).

Interactions of several steps (route a request: re-read the shard count, create the queue,
admit; recover after an outage) are flows: generators that yield plans (or a ``Pause``) and
get each plan's parsed reply back, or its error thrown in. A shell drives a flow with
``Steps``: the same flow serves threads and asyncio.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from redbatch.errors import QueueFull, ResultNotFound
from redbatch.producer._core import (
    CANCEL_MARK,
    CANCEL_TTL_MS,
    REPLY_BATCH,
    WAKE,
    WAKE_TTL_MS,
    ProducerCore,
)
from redbatch.producer.entries import Submission
from redbatch.protocol.fields import outcome_from_result
from redbatch.protocol.keys import GROUP, KeySpace, QueueKeys, check_request_id
from redbatch.protocol.scripts import Admission, Scripts
from redbatch.protocol.shards import SHARDS_FIELD, parse_shards

T = TypeVar("T")
Command = tuple[Any, ...]


def _replies(replies: list[Any]) -> list[Any]:
    return replies


def _nothing(replies: list[Any]) -> None:
    return None


# Picks the registered script a plan calls from a client's Scripts.
ScriptOf = Callable[[Scripts], Any]


@dataclass(frozen=True, slots=True)
class Plan(Generic[T]):
    """Commands sent together (one pipeline; one command alone is sent as it is) or, with
    ``script``, one call of that script with ``keys`` and ``args``. ``what`` begins the
    ConnectionFailed line of a failure; ``parse`` turns the replies (a list, one per command)
    into the plan's result, or raises."""

    what: str
    commands: Sequence[Command]
    parse: Callable[[list[Any]], T] = _replies  # type: ignore[assignment]
    script: ScriptOf | None = None
    keys: Sequence[str] = ()
    args: Sequence[bytes | str | int] = ()
    transaction: bool = False
    raise_on_error: bool = True
    # Sent on its own connection under the caller's deadline (sync, one command): its reply
    # is then Redis's raw one, no redis-py response callback applied.
    bounded: bool = False

    def call_script(self, scripts: Scripts, deadline: float | None = None) -> Any:
        """The script's reply (a coroutine for an asyncio client's scripts); ``deadline``
        (``time.monotonic``) bounds a plain sync client's call."""
        assert self.script is not None
        return self.script(scripts)(keys=self.keys, args=self.args, deadline=deadline)

    def pipeline(self, client: Any) -> Any:
        """A pipeline of ``client`` (sync or asyncio) holding this plan's commands."""
        pipe = client.pipeline(transaction=self.transaction)
        for command in self.commands:
            pipe.execute_command(*command)
        return pipe


@dataclass(frozen=True, slots=True)
class Pause:
    """A flow asks its driver to wait ``seconds`` (or until told to stop)."""

    seconds: float


Step = Plan[Any] | Pause
Flow = Generator[Step, Any, T]


class Steps(Generic[T]):
    """Drives a flow: iterate for its steps, set ``reply`` (or ``error``) after running each;
    ``value`` is the flow's result once the iteration ends. An error set is thrown into the
    flow, which may handle it; if it does not, it propagates from the iteration."""

    __slots__ = ("_flow", "error", "reply", "value")

    def __init__(self, flow: Generator[Any, Any, T]) -> None:
        self._flow = flow
        self.reply: Any = None
        self.error: BaseException | None = None
        self.value: T

    def settle(self, run: Callable[[], Any]) -> None:
        """Run the current step with ``run``: its reply, or its error, goes to the flow."""
        try:
            self.reply = run()
        except BaseException as exc:  # the flow decides; what it does not handle propagates
            self.error = exc

    async def settle_async(self, run: Awaitable[Any]) -> None:
        try:
            self.reply = await run
        except BaseException as exc:
            self.error = exc

    def __iter__(self) -> Steps[T]:
        return self

    def __next__(self) -> Any:
        try:
            if self.error is not None:
                error, self.error = self.error, None
                return self._flow.throw(error)
            return self._flow.send(self.reply)
        except StopIteration as done:
            self.value = done.value
            raise StopIteration from None


# -- the plans ---------------------------------------------------------------------------


def _admit(scripts: Scripts) -> Any:
    return scripts.admit


def _admit_once(scripts: Scripts) -> Any:
    return scripts.admit_once


def _leave(scripts: Scripts) -> Any:
    return scripts.leave


def admission(
    core: ProducerCore, subs: list[Submission], once: bool, numbers: Admission
) -> Plan[QueueFull | None]:
    """One admission call: ``admit`` of ``subs`` (one queue, one lane) with the admission's
    sequence ``numbers``, or ``admit_once`` of a single request with a caller-chosen id.
    Parses to the QueueFull to raise when refused, None when admitted."""
    first = subs[0]
    if once:
        script, (keys, args) = _admit_once, core.admit_once_call(first)
    else:
        script, (keys, args) = _admit, core.admit_call(subs, numbers)

    def parse(replies: list[Any]) -> QueueFull | None:
        return core.refusal(first.queue, replies[0], first.priority)

    what = f"cannot submit to queue {first.queue}"
    return Plan(what, (), parse, script=script, keys=keys, args=args)


def _first(replies: list[Any]) -> Any:
    return replies[0]


def cancel(core: ProducerCore, queue: str, ids: list[str]) -> Plan[None]:
    commands = [
        ("SET", key, CANCEL_MARK, "PX", CANCEL_TTL_MS) for key in core.cancel_keys(queue, ids)
    ]
    return Plan(f"cannot cancel requests of queue {queue}", commands, _nothing)


def leave(core: ProducerCore, queue: str, request_id: str) -> Plan[Any]:
    """This producer stops waiting for ``request_id`` (cancelled if nobody else waits)."""
    keys, args = core.leave_call(queue, request_id)
    what = f"cannot cancel request {request_id}"
    return Plan(what, (), _first, script=_leave, keys=keys, args=args)


def consumers(keyspace: KeySpace, names: Sequence[str]) -> Plan[list[tuple[str, str]]]:
    """(physical queue, consumer name) of each normal lane's consumers (a missing stream or
    group: none)."""
    commands = [("XINFO", "CONSUMERS", keyspace.queue(n).stream, GROUP) for n in names]

    def parse(replies: list[Any]) -> list[tuple[str, str]]:
        found = []
        for name, reply in zip(names, replies, strict=True):
            if isinstance(reply, Exception):
                continue
            found += [(name, _text(c.get("name", c.get(b"name", b"")))) for c in reply]
        return found

    return Plan("cannot list the workers", commands, parse, raise_on_error=False)


def heartbeats(keyspace: KeySpace, consumers: Sequence[tuple[str, str]]) -> Plan[bool]:
    """Whether any of ``consumers`` has a live heartbeat key."""
    commands = [("EXISTS", keyspace.queue(q).worker(name)) for q, name in consumers]

    def parse(replies: list[Any]) -> bool:
        return any(replies)

    return Plan("cannot read worker heartbeats", commands, parse)


# Keys a SCAN step of require_worker's fallback looks at (one round trip each).
SCAN_COUNT = 1000


def heartbeat_scan(keyspace: KeySpace, name: str, cursor: int) -> Plan[tuple[int, bool]]:
    """One SCAN step over heartbeat keys of physical queue ``name``: (next cursor, whether
    one was found). For a worker that has not read a request yet: Redis 7.0 lists a group
    consumer only once it has read one."""
    pattern = keyspace.queue(name).worker("*")

    def parse(replies: list[Any]) -> tuple[int, bool]:
        cursor, keys = replies[0]
        return int(cursor), bool(keys)

    command = ("SCAN", cursor, "MATCH", pattern, "COUNT", SCAN_COUNT)
    return Plan("cannot look for workers", [command], parse)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def stored_result(
    core: ProducerCore, queue: str, names: Sequence[str], request_id: str
) -> Plan[Any]:
    """The value stored for ``request_id`` in any of ``names`` (a queue's shards)."""
    key_of = core.keyspace.queue
    commands = [("HGETALL", key_of(name).result(check_request_id(request_id))) for name in names]

    def parse(found: list[dict[bytes, bytes]]) -> Any:
        fields = next((f for f in found if f), None)
        if not fields:
            raise ResultNotFound(queue, request_id)
        outcome, ct = outcome_from_result(request_id, fields)
        return core.value(outcome, ct)

    return Plan(f"cannot read result {request_id} of queue {queue}", commands, parse)


def stored_results(keyspace: KeySpace, pairs: Sequence[tuple[str, str]]) -> Plan[list[Any]]:
    """The result hashes of (physical queue, request id) pairs, as read."""
    commands = [("HGETALL", keyspace.queue(queue).result(rid)) for queue, rid in pairs]
    return Plan("cannot read stored results", commands)


def shard_count(keyspace: KeySpace, queue: str) -> Plan[int]:
    def parse(replies: list[Any]) -> int:
        return parse_shards(queue, replies[0][0])

    command = ("HMGET", keyspace.config(queue), SHARDS_FIELD)
    return Plan(f"cannot read the config of queue {queue}", [command], parse, bounded=True)


def ensure_queue(keyspace: KeySpace, keys: QueueKeys) -> Plan[None]:
    """Create the queue's streams and consumer group (an existing group is no error) and
    list it in the namespace's queue set."""
    commands: list[Command] = [
        ("XGROUP", "CREATE", stream, GROUP, "0", "MKSTREAM") for stream in keys.streams
    ]
    commands.append(("SADD", keyspace.queues, keys.name))
    return Plan(f"cannot create queue {keys.name}", commands, _created, raise_on_error=False)


def _created(replies: list[Any]) -> None:
    for reply in replies:
        if isinstance(reply, Exception) and not str(reply).startswith("BUSYGROUP"):
            raise reply


def wake(key: str) -> Plan[None]:
    """A wake marker on a reply list (a blocked listener returns and re-reads its keys)."""
    commands = [("RPUSH", key, WAKE), ("PEXPIRE", key, WAKE_TTL_MS, "NX")]
    return Plan("cannot wake the reply listener", commands, _nothing, transaction=True)


def pop_replies(keys: Sequence[str], block_s: float) -> Plan[list[bytes]]:
    def parse(replies: list[Any]) -> list[bytes]:
        popped = replies[0]
        return list(popped[1]) if popped else []

    command = ("BLMPOP", block_s, len(keys), *keys, "LEFT", "COUNT", REPLY_BATCH)
    return Plan("cannot pop replies", [command], parse)
