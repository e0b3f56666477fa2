"""OpenTelemetry traces through the queue (the ``redbatch[otel]`` extra; docs/observability.md).

The producer puts the W3C trace context of a ``redbatch.submit`` span (kind PRODUCER, one per
request) into the optional entry fields ``traceparent`` / ``tracestate``; a worker records one
``redbatch.batch`` span (kind CONSUMER) per batch, with a *link* to each request's context:
the messaging convention for a batch receive, since one batch serves many traces.

Nothing is imported or paid unless tracing is on:

- producer side: on when the application has set a tracer provider (``opentelemetry.trace``
  is imported and its global provider is a real one); a library does not configure the
  application's tracing. Otherwise ``entry_fields`` returns ``{}`` after one dict look-up.
- worker side: on when the process already has a tracer provider (an embedded worker), or
  when ``OTEL_TRACES_EXPORTER`` names an exporter (not ``none``): then a TracerProvider is
  set up from the standard ``OTEL_*`` variables (service name, resource, sampler, batch
  processor, exporter endpoint). Unlike the OpenTelemetry default (``otlp``), an unset
  ``OTEL_TRACES_EXPORTER`` means off: installing the extra must not start exporting.
- ``OTEL_SDK_DISABLED=true`` turns both sides off.
"""

# ruff: noqa: PLC0415 - opentelemetry is imported inside functions, only once tracing is on.
from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from redbatch.errors import ConfigError
from redbatch.protocol.fields import MAX_FIELD_BYTES, TRACEPARENT, TRACESTATE

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

_SCOPE = "redbatch"
SUBMIT_SPAN = "redbatch.submit"
BATCH_SPAN = "redbatch.batch"
SYSTEM = "redbatch"
DEFAULT_SERVICE_NAME = "redbatch-worker"
# Exception events on one batch span at most: a batch of 4096 failures is one story, told by
# its outcome counts; the first few say what went wrong.
MAX_EXCEPTION_EVENTS = 16
_TRUE = ("true", "1", "yes")


def sdk_disabled() -> bool:
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() in _TRUE


class _ProviderWatch:
    """Whether the application has set a tracer provider, at the cost of an attribute read
    per request (this runs for every request a producer submits, traced or not; reading
    ``os.environ``, as ``get_tracer_provider`` and ``OTEL_SDK_DISABLED`` do, costs ~1 us).

    The first look goes through ``get_tracer_provider`` (which also loads a provider named by
    OTEL_PYTHON_TRACER_PROVIDER); later ones read the API's global, which only
    ``set_tracer_provider`` changes. Should a future API not have it, every look goes
    through ``get_tracer_provider``. OTEL_SDK_DISABLED is read at the first look."""

    def __init__(self) -> None:
        self._looked = False
        self._disabled = False

    def provider(self) -> Any | None:
        trace = sys.modules.get("opentelemetry.trace")
        if trace is None:
            return None  # an application that never imported it cannot have set a provider
        if self._looked:
            current = getattr(trace, "_TRACER_PROVIDER", _UNKNOWN)
            if current is None or self._disabled:
                return None
        else:
            self._looked, self._disabled = True, sdk_disabled()
            if self._disabled:
                return None
        provider = trace.get_tracer_provider()
        if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
            return None
        return provider


_UNKNOWN = object()
_watch = _ProviderWatch()


def _real_provider() -> Any | None:
    """The application's tracer provider if it set one (see ``_ProviderWatch``)."""
    return _watch.provider()


# -- producer side ------------------------------------------------------------------------------


_NO_FIELDS: Mapping[str, str] = MappingProxyType({})  # shared: no dict built per request


def entry_fields(queue: str, request_id: str) -> Mapping[str, str]:
    """The trace fields of one new entry (none when tracing is off), recording its
    ``redbatch.submit`` span as a child of the caller's current span."""
    provider = _watch.provider()
    if provider is None:
        return _NO_FIELDS
    return _submit_span(provider.get_tracer(_SCOPE), queue, request_id)


def _submit_span(tracer: Tracer, queue: str, request_id: str) -> dict[str, str]:
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    attributes = {
        "messaging.system": SYSTEM,
        "messaging.operation.type": "create",
        "messaging.destination.name": queue,
        "messaging.message.id": request_id,
    }
    # The span marks the message's creation (encoded, handed to the admission script); the
    # worker's batch span links to it, which is what joins the two traces.
    span = tracer.start_span(SUBMIT_SPAN, kind=trace.SpanKind.PRODUCER, attributes=attributes)
    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier, context=trace.set_span_in_context(span))
    span.end()
    # A tracestate longer than an entry field may be (W3C caps it at 512 chars anyway) is
    # dropped, not sent: the entry must stay within the wire contract's bounds.
    if len(carrier.get(TRACESTATE, "").encode()) > MAX_FIELD_BYTES:
        del carrier[TRACESTATE]
    return {k: v for k, v in carrier.items() if k in (TRACEPARENT, TRACESTATE)}


# -- worker side --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BatchTrace:
    """What the batch span says about one finished batch (times in ms since the epoch)."""

    queue: str
    worker: str
    batch_id: int
    size: int
    start_ms: int
    end_ms: int
    handler_s: float
    waits_ms: Sequence[float]
    outcomes: Mapping[str, int]
    # (request id, traceparent, tracestate) of each entry that carried a context.
    contexts: Sequence[tuple[str, bytes, bytes | None]]
    # (request id, "Type: message") of each failed item.
    failures: Sequence[tuple[str, str]]


class BatchTracer:
    """Records ``redbatch.batch`` spans after the fact, from what the worker measured: no
    tracing code runs on the handler's thread or between the read and the handler."""

    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer

    def record(self, batch: BatchTrace) -> str:
        """Record the batch's span; returns its trace id (32 hex digits) for the log line."""
        from opentelemetry import trace
        from opentelemetry.trace import Status, StatusCode

        span = self._tracer.start_span(
            BATCH_SPAN,
            context=trace.set_span_in_context(trace.INVALID_SPAN),  # a root: it has N parents
            kind=trace.SpanKind.CONSUMER,
            attributes=_attributes(batch),
            links=list(_links(batch.contexts)),
            start_time=batch.start_ms * 1_000_000,
        )
        for request_id, error in batch.failures[:MAX_EXCEPTION_EVENTS]:
            kind, _, message = error.partition(": ")
            span.add_event(
                "exception",
                {
                    "exception.type": kind,
                    "exception.message": message,
                    "messaging.message.id": request_id,
                },
                timestamp=batch.end_ms * 1_000_000,
            )
        if batch.failures:
            span.set_status(
                Status(StatusCode.ERROR, f"{len(batch.failures)} of {batch.size} items failed")
            )
        span.end(end_time=max(batch.end_ms, batch.start_ms) * 1_000_000)
        return f"{span.get_span_context().trace_id:032x}"


def _attributes(batch: BatchTrace) -> dict[str, Any]:
    waits = sorted(batch.waits_ms)
    attributes: dict[str, Any] = {
        "messaging.system": SYSTEM,
        "messaging.operation.type": "process",
        "messaging.destination.name": batch.queue,
        "messaging.batch.message_count": batch.size,
        "redbatch.worker": batch.worker,
        "redbatch.batch.id": batch.batch_id,
        "redbatch.handler.duration_ms": round(batch.handler_s * 1000, 3),
    }
    if waits:
        attributes["redbatch.queue_wait.max_ms"] = waits[-1]
        attributes["redbatch.queue_wait.p50_ms"] = waits[(len(waits) - 1) // 2]
    for status, count in batch.outcomes.items():
        attributes[f"redbatch.outcome.{status}"] = count
    return attributes


def _links(contexts: Iterable[tuple[str, bytes, bytes | None]]) -> Iterable[Any]:
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    propagator = TraceContextTextMapPropagator()
    for request_id, parent, state in contexts:
        carrier = {TRACEPARENT: parent.decode("ascii", "replace")}
        if state:
            carrier[TRACESTATE] = state.decode("ascii", "replace")
        # A malformed traceparent extracts to an invalid context: no link, nothing else lost.
        context = trace.get_current_span(propagator.extract(carrier)).get_span_context()
        if context.is_valid:
            yield trace.Link(context, {"messaging.message.id": request_id})


def batch_tracer() -> BatchTracer | None:
    """The worker's tracer, or None when tracing is off (see the module's docstring)."""
    if sdk_disabled():
        return None
    provider = _real_provider()
    if provider is None:
        exporters = _exporter_names()
        if not exporters:
            return None
        provider = _configure(exporters)
    return BatchTracer(provider.get_tracer(_SCOPE))


def _exporter_names() -> list[str]:
    raw = os.environ.get("OTEL_TRACES_EXPORTER", "")
    names = [n.strip().lower() for n in raw.split(",") if n.strip()]
    return [] if not names or names == ["none"] else [n for n in names if n != "none"]


def _configure(exporters: list[str]) -> Any:
    """A global TracerProvider from the OTEL_* variables, exporting through ``exporters``."""
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        raise ConfigError(
            "OTEL_TRACES_EXPORTER is set but OpenTelemetry is not installed: "
            "pip install 'redbatch[otel]'"
        ) from None
    resource = Resource.create()  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    # The sampler (OTEL_TRACES_SAMPLER[_ARG]) and the batch processor's OTEL_BSP_* settings
    # are read from the environment by the SDK itself.
    provider = TracerProvider(resource=resource)
    for name in exporters:
        provider.add_span_processor(BatchSpanProcessor(_exporter(name)))
    trace.set_tracer_provider(provider)
    return trace.get_tracer_provider()


def _exporter(name: str) -> Any:
    """An exporter by its OTEL_TRACES_EXPORTER name, through the entry points exporter
    packages register (``otlp`` is OTLP over HTTP unless OTEL_EXPORTER_OTLP_PROTOCOL=grpc)."""
    from importlib.metadata import entry_points

    if name == "otlp":
        protocol = os.environ.get(
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "")
        )
        name = "otlp_proto_grpc" if protocol.strip() == "grpc" else "otlp_proto_http"
    found = entry_points(group="opentelemetry_traces_exporter", name=name)
    if not found:
        package = {
            "otlp_proto_http": "opentelemetry-exporter-otlp-proto-http (pip install "
            "'redbatch[otel]')",
            "otlp_proto_grpc": "opentelemetry-exporter-otlp-proto-grpc",
        }.get(name, f"a package that provides the {name!r} trace exporter")
        raise ConfigError(f"OTEL_TRACES_EXPORTER asks for {name!r}: install {package}")
    return next(iter(found)).load()()
