"""The one place that spells Redis key names (wire contract v1, shared/DESIGN.md).

Every key of a queue carries the hash tag ``{Q}`` so that all of a queue lives on one Redis
Cluster slot and a single MULTI or Lua call may touch any of them.

A queue has one stream per priority ("lane"): ``normal`` is the contract's ``rb:{Q}:stream``
(so entries added by hand there keep working); ``high`` and ``low`` are ``rb:{Q}:stream:high``
and ``rb:{Q}:stream:low``. Each lane has its own consumer group ``workers``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from redbatch.errors import ConfigError

QUEUE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
REQUEST_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
# The namespace is a key prefix; braces or colons in it would break hash tags and parsing.
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

    def queue(self, queue: str) -> QueueKeys:
        return QueueKeys(self.namespace, check_queue_name(queue))


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

    def cancel(self, request_id: str) -> str:
        return f"{self._base}:cancel:{request_id}"

    def stats(self, slot: int) -> str:
        """Hash of what workers did in one 10-second slot (``protocol.stats``)."""
        return f"{self._base}:stats:{slot}"

    def worker(self, worker_name: str) -> str:
        return f"{self._base}:worker:{worker_name}"
