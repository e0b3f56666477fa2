"""A producer process that traces: ``python -m helpers.traced_producer URL NAMESPACE QUEUE
IDLE_QUEUE N``.

It sets an SDK tracer provider with an in-memory exporter (as an application would set its
own), submits N requests to QUEUE inside an ``app`` span and waits for their results, adds
one more to IDLE_QUEUE (no worker) and prints one JSON object: each finished span (name,
kind, trace and span id, parent span id, request id), the results, and the fields of the
entry waiting in IDLE_QUEUE's stream.
"""

from __future__ import annotations

import json
import sys

import redis
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from redbatch import Producer
from redbatch.protocol.keys import KeySpace

WAIT_S = 30.0


def main(url: str, namespace: str, queue: str, idle_queue: str, n: int) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    tracer = trace.get_tracer("app")
    with Producer.from_url(url, namespace=namespace) as producer:
        with tracer.start_as_current_span("app"):
            handles = [producer.submit(queue, i, id=f"traced-{i}") for i in range(n)]
            results = [h.result(WAIT_S) for h in handles]
        producer.submit(idle_queue, "waits", id="traced-idle")
    stream = KeySpace(namespace).queue(idle_queue).stream
    waiting = redis.Redis.from_url(url).xrange(stream)
    spans = [
        {
            "name": s.name,
            "kind": s.kind.name,
            "trace_id": f"{s.context.trace_id:032x}",
            "span_id": f"{s.context.span_id:016x}",
            "parent": f"{s.parent.span_id:016x}" if s.parent else None,
            "request_id": (s.attributes or {}).get("messaging.message.id"),
        }
        for s in exporter.get_finished_spans()
    ]
    fields = {k.decode(): v.decode(errors="replace") for k, v in waiting[0][1].items()}
    print(json.dumps({"spans": spans, "results": results, "idle_entry": fields}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
