"""ECS-JSON logs on stdout, tagged with the service name and the current trace.

Personal data and secrets must never reach logs: callers log ids and sizes, never message text, and the
formatter (`ScrubbingFormatter`) masks what slips through anyway (`supportbot.pii`: e-mails, phones, cards,
IBANs, keys and tokens) in every string it writes: the message, string extras, the exception's message and its
stack trace (whole chain, causes included), uvicorn's and every library's lines alike, since they all reach
the root logger's one handler. Fields that are ours and never free text (timestamps, trace ids, levels, code
locations) are left alone, so a digit run in a trace id is not taken for a card number.
"""

from __future__ import annotations

import logging
import sys
import threading
import traceback
from types import TracebackType
from typing import Any

import ecs_logging
from opentelemetry import trace

from supportbot.pii import redact

KEPT_AS_IS = frozenset({"@timestamp", "ecs.version", "log.level", "log.logger", "log.origin.function",
                        "log.origin.file.name", "log.origin.file.line", "process.name", "process.thread.name",
                        "trace.id", "span.id", "transaction.id", "service.name", "error.type"})
"""ECS fields (dotted) written as they are: set by logging or by us, never holding customer text."""


def scrub(text: str) -> str:
    """Mask secrets and personal data (`supportbot.pii`, the same redaction transcripts get) in free text."""
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


class ScrubbingFormatter(ecs_logging.StdlibFormatter):
    """ECS JSON with every free-text string scrubbed; the stack trace is the whole exception chain, with each
    exception's message (where a driver's error quotes a statement's values), scrubbed like the rest."""

    def format_to_ecs(self, record: logging.LogRecord) -> dict[str, Any]:
        return _scrubbed(super().format_to_ecs(record), "")  # type: ignore[no-any-return]

    def _record_error_stack_trace(self, record: logging.LogRecord) -> str | None:
        exc_info = record.exc_info
        if isinstance(exc_info, tuple) and exc_info[1] is not None:
            return "".join(traceback.format_exception(exc_info[1]))
        return super()._record_error_stack_trace(record)  # type: ignore[no-any-return]


def _scrubbed(value: Any, path: str) -> Any:
    if isinstance(value, str):
        return value if path in KEPT_AS_IS else scrub(value)
    if isinstance(value, dict):
        return {key: _scrubbed(item, f"{path}.{key}" if path else key) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrubbed(item, path) for item in value]
    return value


def _log_uncaught(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    """Uncaught exceptions go through the formatter too, instead of Python's plain print to stderr."""
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, exc, tb)
        return
    logging.getLogger("supportbot").critical("uncaught exception", exc_info=(kind, exc, tb))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is None:
        threading.__excepthook__(args)
        return
    _log_uncaught(args.exc_type, args.exc_value, args.exc_traceback)


def configure_logging(service_name: str, level: str = "INFO") -> None:
    """Route the root logger (and uvicorn's, warnings and uncaught exceptions) to one ECS-JSON stdout handler."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(ScrubbingFormatter(exclude_fields=["process", "log.original", "color_message"]))
    handler.addFilter(ServiceContextFilter(service_name))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
        logger.setLevel(logging.NOTSET)  # the root's level decides (an embedded uvicorn.Config may have set one)
    # Access lines carry query strings; request logging is done by our own middleware instead.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.captureWarnings(False)  # installed afresh: something may have replaced warnings.showwarning since
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread
