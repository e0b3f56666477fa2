"""redbatch.tracing without processes: the submit span's entry fields, the batch span's
links and attributes (on a local provider: the global one stays unset in this process), and
that tracing off imports nothing."""

from __future__ import annotations

import subprocess
import sys

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

from helpers import subprocess_env
from redbatch import tracing
from redbatch.errors import ConfigError
from redbatch.protocol.fields import (
    MAX_ENTRY_FIELDS,
    MAX_FIELD_BYTES,
    PAYLOAD,
    TRACEPARENT,
    TRACESTATE,
    build_entry,
    check_bounds,
)


@pytest.fixture
def spans() -> tuple[trace.Tracer, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("test"), exporter


def parent(state: TraceState | None = None) -> NonRecordingSpan:
    return NonRecordingSpan(
        SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(1), trace_state=state)
    )


def test_tracing_off_imports_nothing_and_adds_no_field() -> None:
    # redis-py may import parts of opentelemetry itself (its own metrics): what counts is
    # that redbatch adds none.
    code = (
        "import sys, redis; otel = lambda: {m for m in sys.modules if 'opentelemetry' in m}; "
        "before = otel(); from redbatch import tracing; "
        "from redbatch.producer._core import ProducerCore; "
        "fields = ProducerCore().submission('q', 1).fields; "
        "print(sorted(fields), tracing.batch_tracer(), sorted(otel() - before) == [])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=subprocess_env(), capture_output=True, text=True,
        check=True,
    )  # fmt: skip
    assert out.stdout.split() == ["['id',", "'payload',", "'reply']", "None", "True"]


def test_off_without_a_provider_and_when_the_sdk_is_disabled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
    assert tracing.entry_fields("q", "r1") == {}  # opentelemetry imported, no provider set
    assert tracing.batch_tracer() is None
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert tracing.batch_tracer() is None


def test_an_unknown_exporter_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "nosuch")
    with pytest.raises(ConfigError, match="OTEL_TRACES_EXPORTER asks for 'nosuch'"):
        tracing.batch_tracer()
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)  # nothing set


def test_submit_span_is_a_producer_child_whose_context_is_the_field(
    spans: tuple[trace.Tracer, InMemorySpanExporter],
) -> None:
    tracer, exporter = spans
    with trace.use_span(parent(TraceState([("vendor", "x1")]))):
        fields = tracing._submit_span(tracer, "q", "r1")
    (span,) = exporter.get_finished_spans()
    assert span.name == "redbatch.submit" and span.kind is trace.SpanKind.PRODUCER
    assert span.parent is not None and span.parent.span_id == 0xDEF
    assert dict(span.attributes or {})["messaging.message.id"] == "r1"
    context = span.get_span_context()
    assert fields[TRACEPARENT] == f"00-{context.trace_id:032x}-{context.span_id:016x}-01"
    assert fields[TRACESTATE] == "vendor=x1"


def test_a_tracestate_past_the_field_bound_is_dropped(
    spans: tuple[trace.Tracer, InMemorySpanExporter],
) -> None:
    tracer, _ = spans
    # 32 members of ~60 bytes: valid W3C syntax, longer than an entry field may be.
    state = TraceState([(f"k{i}", "v" * 56) for i in range(32)])
    with trace.use_span(parent(state)):
        fields = tracing._submit_span(tracer, "q", "r1")
    assert TRACEPARENT in fields and TRACESTATE not in fields


def test_an_entry_with_trace_fields_keeps_the_bounds_and_the_payload_last() -> None:
    trace_fields = {TRACEPARENT: "00-" + "a" * 32 + "-" + "b" * 16 + "-01", TRACESTATE: "k=v"}
    fields = build_entry(
        "r1", b"x", reply="p1", enq=1, deadline=2, attempt=2, cost=3, ct="json",
        priority="high", trace=trace_fields,
    )  # fmt: skip
    assert list(fields)[-1] == PAYLOAD and fields[TRACEPARENT] == trace_fields[TRACEPARENT]
    raw = {k.encode(): str(v).encode() for k, v in fields.items()}
    raw[TRACESTATE.encode()] = b"s" * MAX_FIELD_BYTES
    check_bounds(raw)  # the largest trace fields pass
    assert len(raw) <= MAX_ENTRY_FIELDS


def batch(contexts: list[tuple[str, bytes, bytes | None]], failures: int = 0) -> tracing.BatchTrace:
    return tracing.BatchTrace(
        queue="q", worker="w1", batch_id=7, size=4, start_ms=1_000, end_ms=1_025,
        handler_s=0.02, waits_ms=[5, 1, 9, 3], outcomes={"ok": 4 - failures, "error": failures},
        contexts=contexts,
        failures=[(f"r{i}", f"ValueError: bad {i}") for i in range(failures)],
    )  # fmt: skip


def test_batch_span_links_each_valid_context_and_says_what_ran(
    spans: tuple[trace.Tracer, InMemorySpanExporter],
) -> None:
    tracer, exporter = spans
    a = b"00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01"
    b = b"00-" + b"3" * 32 + b"-" + b"4" * 16 + b"-00"
    trace_id = tracing.BatchTracer(tracer).record(
        batch([("r1", a, b"k=v"), ("r2", b, None), ("r3", b"garbage", None)], failures=1)
    )
    (span,) = exporter.get_finished_spans()
    assert span.name == "redbatch.batch" and span.kind is trace.SpanKind.CONSUMER
    assert span.parent is None and trace_id == f"{span.context.trace_id:032x}"
    linked = [(link.context.trace_id, link.context.span_id) for link in span.links]
    assert linked == [
        (int("1" * 32, 16), int("2" * 16, 16)),
        (int("3" * 32, 16), int("4" * 16, 16)),
    ]
    assert span.links[0].context.trace_state.get("k") == "v"
    assert dict(span.links[1].attributes or {}) == {"messaging.message.id": "r2"}
    attributes = dict(span.attributes or {})
    assert attributes["messaging.destination.name"] == "q"
    assert attributes["messaging.batch.message_count"] == 4
    assert attributes["redbatch.batch.id"] == 7 and attributes["redbatch.worker"] == "w1"
    assert attributes["redbatch.queue_wait.max_ms"] == 9
    assert attributes["redbatch.queue_wait.p50_ms"] == 3
    assert attributes["redbatch.handler.duration_ms"] == 20.0
    assert (attributes["redbatch.outcome.ok"], attributes["redbatch.outcome.error"]) == (3, 1)
    assert (span.start_time, span.end_time) == (1_000_000_000, 1_025_000_000)
    (event,) = span.events
    assert event.name == "exception"
    assert dict(event.attributes or {}) == {
        "exception.type": "ValueError", "exception.message": "bad 0", "messaging.message.id": "r0",
    }  # fmt: skip
    assert span.status.status_code is trace.StatusCode.ERROR


def test_exception_events_are_bounded(spans: tuple[trace.Tracer, InMemorySpanExporter]) -> None:
    tracer, exporter = spans
    tracing.BatchTracer(tracer).record(batch([], failures=40))
    (span,) = exporter.get_finished_spans()
    assert len(span.events) == tracing.MAX_EXCEPTION_EVENTS
    assert span.status.description == "40 of 4 items failed"
