"""ECS-JSON logs on stdout, tagged with the service name and the current trace.

Personal data and secrets must never reach logs: callers log ids and sizes, never message text, and
`ScrubFilter` masks secrets and personal data (`supportbot.pii`) that slip through anyway.
"""

from __future__ import annotations

import logging
import re
import sys

import ecs_logging
from opentelemetry import trace

from supportbot.pii import redact

_SECRETS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?i)bearer\s+[A-Za-z0-9._~+/=-]+"), "Bearer [REDACTED]"),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{8,}\b"), "[REDACTED_KEY]"),
    (re.compile(r"\bsb_[A-Za-z0-9_-]{8,}\b"), "[REDACTED_KEY]"),
)


def scrub(text: str) -> str:
    """Mask secrets, then personal data (the same redaction the nlp service offers), in a free-text string."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return redact(text)[0]


class ServiceContextFilter(logging.Filter):
    """Adds `service.name` and, inside a span, `trace.id` / `span.id` to every record."""

    def __init__(self, service_name: str) -> None:
        super().__init__()
        self.service_name = service_name

    def filter(self, record: logging.LogRecord) -> bool:
        setattr(record, "service.name", self.service_name)
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            setattr(record, "trace.id", format(ctx.trace_id, "032x"))
            setattr(record, "span.id", format(ctx.span_id, "016x"))
        return True


class ScrubFilter(logging.Filter):
    """Masks personal data and secrets in the rendered message."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.msg = record.getMessage()
            record.args = None
        if isinstance(record.msg, str):
            record.msg = scrub(record.msg)
        return True


def configure_logging(service_name: str, level: str = "INFO") -> None:
    """Route the root logger (and uvicorn's) to one ECS-JSON stdout handler."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(ecs_logging.StdlibFormatter(exclude_fields=["process", "log.original", "color_message"]))
    handler.addFilter(ServiceContextFilter(service_name))
    handler.addFilter(ScrubFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # Access lines carry query strings; request logging is done by our own middleware instead.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
