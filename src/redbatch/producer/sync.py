"""The synchronous producer: a thin shell that runs the producer's flows (``engine``) on the
caller's thread, and its reply listener on threads of its own (``listener``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from redbatch.producer import options as opt
from redbatch.producer._core import ProducerCore
from redbatch.producer.admission import Deadline
from redbatch.producer.engine import Engine
from redbatch.producer.entries import Submission
from redbatch.producer.gather import gather
from redbatch.producer.handle import Handle
from redbatch.producer.latch import Latch
from redbatch.producer.listener import Listening, ThreadListener
from redbatch.producer.overdue import Overdue
from redbatch.producer.plans import Flow, Steps
from redbatch.producer.requests import Gathered
from redbatch.producer.runners import run
from redbatch.producer.stream_calls import Streams
from redbatch.protocol.scripts import Scripts
from redbatch.transport.cluster import connect_any
from redbatch.transport.connection import MAX_CONNECTIONS, Client, address, ping
from redbatch.transport.topology import topology_of

if TYPE_CHECKING:
    from typing_extensions import Unpack


T = TypeVar("T")


class Producer(Streams):
    """Sends requests to queues and receives their outcomes. Thread-safe; share one.
    Keywords: ``ProducerOptions`` (docs/usage.md#a-producer)."""

    def __init__(self, client: Client, **options: Unpack[opt.ProducerOptions]) -> None:
        self._setup(ProducerCore(**opt.client_options(options)), client, owns_client=False)

    def _setup(self, core: ProducerCore, client: Client, *, owns_client: bool) -> None:
        self._core = core
        self._client = client
        self._owns_client = owns_client
        self._scripts = Scripts(client)
        listening = Listening(core, threading.Condition(), {}, topology_of(client))
        self._listener = ThreadListener(client, listening)
        self._engine: Engine[Handle] = Engine(core, listening, self._handles)
        self._engine.listen = self._listener.add
        self._overdue = Overdue(self._engine, self._drive, MAX_CONNECTIONS)

    @classmethod
    def from_url(cls, url: str, **options: Unpack[opt.UrlOptions]) -> Producer:
        """A producer on its own client; ``cluster`` None: a Redis Cluster when the server
        says it is one. Its connections are named ``redbatch:producer:<name>``."""
        rest, pool = opt.url_options(options)
        core = ProducerCore(**rest)
        client = connect_any(url, **pool, client_name=core.client_name("producer"))
        producer = cls.__new__(cls)
        producer._setup(core, client, owns_client=True)
        return producer

    @property
    def id(self) -> str:
        return self._core.producer_id

    def __enter__(self) -> Producer:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def ping(self) -> None:
        """Raise ConnectionFailed (one readable line) if Redis cannot be used."""
        ping(self._client, address(self._client))

    def submit(self, queue: str, payload: Any, **options: Unpack[opt.SubmitOptions]) -> Handle:
        """Add one request (keywords: ``SubmitOptions``). Raises QueueFull (nothing added),
        PayloadTooLarge, NoWorker, RedisRefused, ConnectionFailed, or ResultTimeout when
        Redis has not confirmed the admission within the timeout (the request may have been
        added: with ``cancel_on_timeout`` it is then cancelled)."""
        return self._submit(queue, payload, Deadline(self._core.timeout(options.get("timeout"))), options)  # fmt: skip  # noqa: E501

    def _submit(
        self, queue: str, payload: Any, deadline: Deadline, options: opt.SubmitOptions
    ) -> Handle:
        return self._overdue.within(deadline, self._engine.one(queue, payload, options, deadline))[0]  # fmt: skip  # noqa: E501

    def call(self, queue: str, payload: Any, **options: Unpack[opt.SubmitOptions]) -> Any:
        """Submit and wait: the timeout is both the request's deadline and the bound of the
        whole call (admission included)."""
        deadline = Deadline(self._core.timeout(options.get("timeout")))
        handle = self._submit(queue, payload, deadline, options)
        return handle._result(deadline.remaining(), deadline.timeout)

    def map(
        self,
        queue: str,
        payloads: Iterable[Any],
        **options: Unpack[opt.MapOptions],
    ) -> list[Any]:
        """``submit_many`` and wait for them all; results in input order. With
        ``return_exceptions`` a failed request's exception takes its place; otherwise the
        first failure is raised once every request has ended or the timeout passed."""
        gathered = Gathered.of(self._core.timeout(options.get("timeout")), options)
        handles = self._submit_many(queue, payloads, gathered.deadline, options)
        return gather(handles, gathered, self._overdue.gone)

    def submit_many(
        self, queue: str, payloads: Iterable[Any], **options: Unpack[opt.ManyOptions]
    ) -> list[Handle]:
        """Submit many without waiting: one atomic admission of ``chunk`` requests per round
        trip, a handle per request (input order). A full queue raises MapQueueFull: the
        chunks admitted before it still run (its ``admitted``)."""
        deadline = Deadline(self._core.timeout(options.get("timeout")))
        return self._submit_many(queue, payloads, deadline, options)

    def _submit_many(
        self, queue: str, payloads: Iterable[Any], deadline: Deadline, options: opt.ManyOptions
    ) -> list[Handle]:
        batch = self._engine.many(queue, payloads, options, deadline)
        return [] if batch is None else self._overdue.within(deadline, batch)

    def cancel(self, queue: str, id: str) -> None:
        """Cancel request ``id`` of ``queue`` (any producer's, from any process): a worker
        that has not started it skips it and it ends ``cancelled``."""
        self._drive(self._engine.cancel(queue, [id]))

    def get_result(self, queue: str, id: str) -> Any:
        """The stored outcome of request ``id`` from any process, until its TTL ends."""
        return self._drive(self._engine.get_result(queue, id))

    def close(self) -> None:
        """Stop the listener; every handle still waiting raises ProducerClosed."""
        if self._engine.closed:
            return
        self._engine.close()
        self._listener.stop()
        self._overdue.stop()
        if self._owns_client:
            self._client.close()

    def _drive(self, flow: Flow[T], at: float | None = None) -> T:
        """Run ``flow``'s plans here, each bounded by ``at`` (``time.monotonic``)."""
        steps = Steps(flow)
        for plan in steps:
            steps.settle(lambda: run(self._client, plan, self._scripts, at))  # noqa: B023
        return steps.value

    def _handles(self, subs: list[Submission], once: bool) -> list[Handle]:
        latch = Latch(len(subs))
        core, cancel, gone = self._core, self._cancel_ids, self._overdue.gone
        return [
            Handle(core, cancel, s.queue, s.request_id, gone, once, s.streaming, latch=latch)
            for s in subs
        ]

    def _cancel_ids(self, queue: str, ids: list[str]) -> None:
        self._drive(self._engine.cancel_here(queue, ids))
