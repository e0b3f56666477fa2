"""A trace through the queue: a producer process that traces (in-memory exporter) submits
inside a span; a real worker process exports its batch spans over OTLP/HTTP to a receiver in
this test; each batch span links to exactly the requests' submit spans."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import redis
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from helpers import subprocess_env
from helpers.entries import queue_keys
from helpers.workers import WorkerProcess, start_worker, wait_serving
from redbatch import Producer
from redbatch.protocol.fields import TRACEPARENT, TRACESTATE

Factory = Callable[..., WorkerProcess]
WAIT_S = 30.0
TRACED = 5
UNTRACED = 3


@dataclass
class Receiver:
    """What an OTLP/HTTP collector received: every span, as the protobuf message."""

    url: str
    spans: list[Any] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    got = Receiver("")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            request = ExportTraceServiceRequest.FromString(body)
            with got.lock:
                for resource in request.resource_spans:
                    for scope in resource.scope_spans:
                        got.spans.extend(scope.spans)
            reply = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    got.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield got
    server.shutdown()
    server.server_close()


def test_batch_spans_link_to_exactly_the_submitted_requests(
    redis_url: str,
    redis_client: redis.Redis,
    namespace: str,
    queue: str,
    other_queue: str,
    receiver: Receiver,
    tmp_path: Any,
) -> None:
    otel = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_SERVICE_NAME": "test-worker",
    }
    worker = wait_serving(
        start_worker(redis_url, namespace, [queue], log_dir=str(tmp_path), env=otel)
    )
    try:
        traced = subprocess.run(
            [sys.executable, "-m", "helpers.traced_producer", redis_url, namespace, queue,
             other_queue, str(TRACED)],
            env=subprocess_env(), capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        # This process has no tracer provider: its requests carry no trace context.
        with Producer.from_url(redis_url, namespace=namespace) as producer:
            plain = [producer.submit(queue, f"plain-{i}", id=f"plain-{i}") for i in range(3)]
            assert [h.result(WAIT_S) for h in plain] == [f"plain-{i}" for i in range(3)]
            producer.submit(other_queue, "waits", id="plain-idle")
    finally:
        # The worker's SDK flushes its spans on the way out (before exit 0).
        assert worker.stop() == 0, worker.log()

    report = json.loads(traced.stdout)
    assert report["results"] == list(range(TRACED))
    app = next(s for s in report["spans"] if s["name"] == "app")
    submits = [s for s in report["spans"] if s["name"] == "redbatch.submit"]
    assert len(submits) == TRACED + 1  # and the one to the idle queue
    assert all(span["kind"] == "PRODUCER" for span in submits)
    idle = next(s for s in submits if s["request_id"] == "traced-idle")
    assert idle["parent"] is None  # submitted outside the app span: a trace of its own
    served = {(s["trace_id"], s["span_id"]) for s in submits if s is not idle}
    for span in submits:
        if span is not idle:
            assert span["trace_id"] == app["trace_id"] and span["parent"] == app["span_id"]

    # The traced entry carries its submit span's context; the plain one carries none.
    version, trace_id, span_id, flags = report["idle_entry"][TRACEPARENT].split("-")
    assert (version, trace_id, span_id) == ("00", idle["trace_id"], idle["span_id"])
    assert int(flags, 16) & 1  # sampled
    entries = redis_client.xrange(queue_keys(redis_client, namespace, other_queue).stream)
    plain_entry = next(f for _, f in entries if f[b"id"] == b"plain-idle")
    assert TRACEPARENT.encode() not in plain_entry and TRACESTATE.encode() not in plain_entry

    batches = [s for s in receiver.spans if s.name == "redbatch.batch"]
    assert batches, "the worker exported no batch span"
    attributes = [{a.key: a.value for a in s.attributes} for s in batches]
    assert sum(a["messaging.batch.message_count"].int_value for a in attributes) == (
        TRACED + UNTRACED
    )
    linked = [(link.trace_id.hex(), link.span_id.hex()) for s in batches for link in s.links]
    assert sorted(linked) == sorted(served)  # each traced request once, no plain one
    for span, attrs in zip(batches, attributes, strict=True):
        assert span.kind == span.SPAN_KIND_CONSUMER
        assert not span.parent_span_id  # a root: its requests are linked, not parents
        assert attrs["messaging.destination.name"].string_value == queue
        assert (
            attrs["redbatch.outcome.ok"].int_value
            == attrs["messaging.batch.message_count"].int_value
        )
        assert "redbatch.queue_wait.max_ms" in attrs and "redbatch.handler.duration_ms" in attrs
