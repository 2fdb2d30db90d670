"""OpenTelemetry tracing, chosen by environment.

FISCAL_TRACES_EXPORTER: "otlp" (OTLP/gRPC to OTEL_EXPORTER_OTLP_ENDPOINT), "console", or "none"
(the default). W3C trace context travels in gRPC metadata through the interceptors below, so one
seal is one trace from Envoy through ledger, counter, signing and the database.

Traces are sampled: FISCAL_TRACES_SAMPLE_RATIO (0 to 1; default 0.01) is the share of traces started
here that are recorded, and a call that arrives with trace context follows its caller's decision
(parent-based), so a trace is kept or dropped whole. Envoy, where a request's trace starts, samples at
the same ratio (gateway/render.py). Tests that look at spans set 1.0.
"""

from __future__ import annotations

import os

from opentelemetry import trace
from opentelemetry.propagate import set_global_textmap
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_provider: TracerProvider | None = None

DEFAULT_SAMPLE_RATIO = 0.01


def sample_ratio() -> float:
    """FISCAL_TRACES_SAMPLE_RATIO, checked: the share of new traces recorded (0 to 1)."""
    raw = os.environ.get("FISCAL_TRACES_SAMPLE_RATIO", "")
    try:
        ratio = float(raw) if raw.strip() else DEFAULT_SAMPLE_RATIO
    except ValueError:
        raise SystemExit(f"FISCAL_TRACES_SAMPLE_RATIO must be a number from 0 to 1, got {raw!r}") from None
    if not 0.0 <= ratio <= 1.0:
        raise SystemExit(f"FISCAL_TRACES_SAMPLE_RATIO must be from 0 to 1, got {raw!r}")
    return ratio


def configure_tracing(service: str) -> None:
    global _provider
    exporter_name = os.environ.get("FISCAL_TRACES_EXPORTER", "none").lower()
    set_global_textmap(TraceContextTextMapPropagator())
    if exporter_name in ("", "none"):
        return
    provider = TracerProvider(resource=Resource.create({"service.name": f"fiscal-{service}"}),
                              sampler=ParentBased(TraceIdRatioBased(sample_ratio())))
    if exporter_name == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(insecure=True)
    elif exporter_name == "console":
        exporter = ConsoleSpanExporter()
    else:
        raise SystemExit(f"FISCAL_TRACES_EXPORTER must be otlp, console or none, not {exporter_name!r}")
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=500))
    trace.set_tracer_provider(provider)
    _provider = provider


def tracing_enabled() -> bool:
    return _provider is not None


def server_interceptors() -> list:
    if not tracing_enabled():
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    return [aio_server_interceptor()]


def client_interceptors() -> list:
    if not tracing_enabled():
        return []
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    return list(aio_client_interceptors())


def instrument_engine(engine) -> None:
    """Trace SQL statements (each database write of a seal becomes a span)."""
    if not tracing_enabled():
        return
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    # skip_dep_check: the instrumentation declares SQLAlchemy < 2.1 but works with 2.1 (checked by
    # tests/test_tracing.py, which asserts the SQL spans).
    SQLAlchemyInstrumentor().instrument(engine=engine.sync_engine, enable_commenter=False, skip_dep_check=True)


def shutdown_tracing() -> None:
    if _provider is not None:
        _provider.shutdown()


tracer = trace.get_tracer("fiscal")
