"""The one place that spells Redis key names (wire contract v1, docs/wire-contract.md).

Every key of a queue carries the hash tag ``{Q}`` so that all of a queue lives on one Redis
Cluster slot and a single MULTI or Lua call may touch any of them.

A queue has one stream per priority ("lane"): ``normal`` is the contract's ``rb:{Q}:stream``
(so entries added by hand there keep working); ``high`` and ``low`` are ``rb:{Q}:stream:high``
and ``rb:{Q}:stream:low``. Each lane has its own consumer group ``workers``.

A sharded queue (``shards=N`` in ``rb:{Q}:config``, N > 1) is N physical queues named
``Q#0`` .. ``Q#{N-1}``, each with exactly a plain queue's keys under ``rb:{Q#k}``: every
script, MULTI and worker/scheduler routine works on one shard as on a queue, in one slot.
'#' never appears in a name users give (``check_queue_name``); ``KeySpace.queue`` also takes
the internal shard names, since workers and the scheduler read them from ``rb:queues``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from redbatch.errors import ConfigError

QUEUE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
REQUEST_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
# The namespace is a key prefix; braces or colons in it would break hash tags and parsing.
# A physical queue: a queue, or one shard ``Q#k`` of it (internal names only).
PHYSICAL_NAME = re.compile(r"([A-Za-z0-9_.-]{1,64})(?:#(0|[1-9][0-9]{0,2}))?")
# Shard counts 1..MAX_SHARDS: beyond a few per cluster node more shards only add idle reads.
MAX_SHARDS = 256
NAMESPACE = re.compile(r"[A-Za-z0-9_.-]{1,32}")
GROUP = "workers"
# Request priorities, highest first; each is one stream ("lane") of the queue.
PRIORITIES = ("high", "normal", "low")
DEFAULT_PRIORITY = "normal"


def check_priority(priority: str) -> str:
    if not isinstance(priority, str) or priority not in PRIORITIES:
        raise ConfigError(f"invalid priority {priority!r}: use one of {', '.join(PRIORITIES)}")
    return priority


def check_queue_name(queue: str) -> str:
    if not isinstance(queue, str) or not QUEUE_NAME.fullmatch(queue):
        raise ConfigError(f"invalid queue name {queue!r}: use 1-64 characters of [A-Za-z0-9_.-]")
    return queue


def check_shard_count(shards: object) -> int:
    if isinstance(shards, bool) or not isinstance(shards, int) or not 1 <= shards <= MAX_SHARDS:
        raise ConfigError(f"invalid shard count {shards!r}: use an integer from 1 to {MAX_SHARDS}")
    return shards


def logical_name(name: str) -> str:
    """The queue a physical queue name belongs to: ``Q`` for ``Q`` and for its shard ``Q#k``."""
    return name.split("#", 1)[0]


def shard_names(queue: str, shards: int) -> tuple[str, ...]:
    """The physical queues of ``queue`` with ``shards`` shards: ``(Q,)`` when not sharded."""
    check_queue_name(queue)
    if check_shard_count(shards) == 1:
        return (queue,)
    return tuple(f"{queue}#{k}" for k in range(shards))


def check_request_id(request_id: str) -> str:
    if not isinstance(request_id, str) or not REQUEST_ID.fullmatch(request_id):
        raise ConfigError(
            f"invalid request id {request_id!r}: use 1-128 characters of [A-Za-z0-9_.:-]"
        )
    return request_id


@dataclass(frozen=True)
class KeySpace:
    """Builds every key name of one namespace (default ``rb``)."""

    namespace: str = "rb"

    def __post_init__(self) -> None:
        if not isinstance(self.namespace, str) or not NAMESPACE.fullmatch(self.namespace):
            raise ConfigError(
                f"invalid namespace {self.namespace!r}: use 1-32 characters of [A-Za-z0-9_.-]"
            )

    @property
    def queues(self) -> str:
        return f"{self.namespace}:queues"

    @property
    def watch(self) -> str:
        """Sorted set of physical queues that may need the scheduler (member = queue name,
        score = when a party last said so, ms of Redis's clock): workers mark the queues they
        serve on every heartbeat, the scheduler the ones it found holding work."""
        return f"{self.namespace}:watch"

    def queue(self, queue: str) -> QueueKeys:
        """The keys of a queue, or of one shard ``Q#k`` of one (a physical queue)."""
        if not isinstance(queue, str) or not PHYSICAL_NAME.fullmatch(queue):
            check_queue_name(queue)  # the user-facing message
            raise ConfigError(f"invalid shard name {queue!r}")
        return QueueKeys(self.namespace, queue)

    def shard(self, queue: str, index: int, shards: int) -> QueueKeys:
        """The keys of shard ``index`` of ``queue`` split in ``shards``; with one shard, the
        queue's own keys (``rb:{Q}:...``, as before sharding existed)."""
        names = shard_names(queue, shards)
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < shards:
            raise ConfigError(f"invalid shard index {index!r} of {shards} shards")
        return QueueKeys(self.namespace, names[index])

    def config(self, queue: str) -> str:
        """Hash of a queue's settings shared by every party (field ``shards``)."""
        return f"{self.namespace}:{{{check_queue_name(queue)}}}:config"


@dataclass(frozen=True)
class QueueKeys:
    """The keys of one queue; build it through ``KeySpace.queue`` so the name is checked."""

    namespace: str
    name: str

    @property
    def _base(self) -> str:
        return f"{self.namespace}:{{{self.name}}}"

    @property
    def stream(self) -> str:
        """The normal lane: the contract's stream, where a request without priority goes."""
        return f"{self._base}:stream"

    def stream_for(self, priority: str) -> str:
        """The stream (lane) of ``priority``; ConfigError for an unknown one."""
        if check_priority(priority) == DEFAULT_PRIORITY:
            return self.stream
        return f"{self._base}:stream:{priority}"

    @property
    def streams(self) -> tuple[str, ...]:
        """Every lane's stream, highest priority first (as ``PRIORITIES``)."""
        return tuple(self.stream_for(p) for p in PRIORITIES)

    @property
    def dead(self) -> str:
        return f"{self._base}:dead"

    @property
    def delayed(self) -> str:
        return f"{self._base}:delayed"

    def result(self, request_id: str) -> str:
        return f"{self._base}:result:{request_id}"

    def reply(self, producer_id: str) -> str:
        return f"{self._base}:reply:{producer_id}"

    def guard(self, request_id: str) -> str:
        """Set of producer ids waiting on a request submitted with an explicit id, until its
        first outcome is written (idempotent submit on servers without XADD IDMP)."""
        return f"{self._base}:guard:{request_id}"

    def admitted(self, producer_id: str) -> str:
        """Sorted set of one producer's admissions applied (sequence numbers, admit.lua):
        a re-sent admission finds its number and adds nothing."""
        return f"{self._base}:admitted:{producer_id}"

    def chunks(self, request_id: str) -> str:
        """Stream of a streaming request's chunks, entry id ``<attempt>-<seq>`` (kept with the
        result TTL so a producer that reconnects, or another process, can read them)."""
        return f"{self._base}:chunks:{request_id}"

    def cancel(self, request_id: str) -> str:
        return f"{self._base}:cancel:{request_id}"

    def stats(self, slot: int) -> str:
        """Hash of what workers did in one 10-second slot (``protocol.stats``)."""
        return f"{self._base}:stats:{slot}"

    def worker(self, worker_name: str) -> str:
        return f"{self._base}:worker:{worker_name}"
