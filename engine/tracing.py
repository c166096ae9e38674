"""OpenTelemetry tracing, on with ``AGENT_TRACING=otlp`` (the ``tracing`` extra), else absent.

    AGENT_TRACING=otlp OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:6006 agent-ng ask "..."

LangChain's callbacks feed ``openinference-instrumentation-langchain``, whose spans follow the
OpenInference conventions that Phoenix, Langfuse and Arize read: one trace per run, with the
graph, each node and each model call (model name, token usage). Tool calls get their span from
``agent_ng.engine.tool_tracing``, which sees what LangChain's tool callbacks cannot (a cached, timed-out
or rejected call). The exporter is OTLP over HTTP and reads the standard ``OTEL_EXPORTER_OTLP_*``
variables itself.

With tracing off nothing here is imported or installed: no callback handler, no wrapper.
LangSmith is separate and keeps working through its own ``LANGSMITH_*`` variables.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider


@cache
def start_tracing() -> TracerProvider:
    """Instrument LangChain once per process, exporting spans over OTLP/HTTP in batches.

    The provider flushes at interpreter exit; call ``force_flush()`` on it to send sooner.
    """
    try:
        from openinference.instrumentation.langchain import LangChainInstrumentor
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as e:
        raise RuntimeError(
            f"AGENT_TRACING=otlp needs the tracing extra: pip install 'agent-ng[tracing]' ({e})"
        ) from e

    provider = TracerProvider(resource=Resource.create({"service.name": "agent-ng"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    instrumentor = LangChainInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    # A sync handler in an async run is otherwise called through a thread pool, once per
    # token: about 170 us a token here. Its work is a few dict writes under its own lock.
    instrumentor._tracer.run_inline = True
    return provider
