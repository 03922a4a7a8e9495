"""OpenTelemetry tracing: one tracer provider per process, W3C `traceparent` across services.

Spans are exported over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set; otherwise trace ids are still
made and propagated, so logs of one request share a `trace.id` across all four services.
"""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

_provider: TracerProvider | None = None


def configure_tracing(service_name: str, otlp_endpoint: str | None) -> TracerProvider:
    """Install the process-wide tracer provider once and return it."""
    global _provider
    if _provider is None:
        _provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        if otlp_endpoint:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            endpoint = otlp_endpoint.rstrip("/") + "/v1/traces"
            _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
        trace.set_tracer_provider(_provider)
    return _provider


def instrument_app(app: FastAPI, provider: TracerProvider) -> None:
    """Open a server span per request, continuing the caller's `traceparent`."""
    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider, excluded_urls="healthz,readyz")


def instrument_client(client: httpx.AsyncClient) -> None:
    """Inject `traceparent` into every request this client sends."""
    HTTPXClientInstrumentor.instrument_client(client, tracer_provider=trace.get_tracer_provider())
