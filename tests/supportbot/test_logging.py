from __future__ import annotations

import json
import logging
import re
import sys
import warnings

import pytest
from opentelemetry import trace

from supportbot.logging import ScrubbingFormatter, configure_logging, scrub
from supportbot.telemetry import configure_tracing


def test_ecs_json_with_service_and_trace(capsys: pytest.CaptureFixture[str]) -> None:
    configure_tracing("test", None)
    configure_logging("nlp")
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("work") as span:
        logging.getLogger("supportbot.test").info("analysed %d tokens", 12)
        trace_id = format(span.get_span_context().trace_id, "032x")
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["service"]["name"] == "nlp"
    assert line["trace"]["id"] == trace_id
    assert line["message"] == "analysed 12 tokens"
    assert line["log.level"] == "info"
    assert "ecs.version" in line


def test_personal_data_and_secrets_are_masked(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("gateway")
    logging.getLogger("x").warning("key %s for jane.doe@example.com, call +44 20 7946 0958",
                                   "Bearer sb_abcdefghijklmnop")
    out = capsys.readouterr().out
    for secret in ("sb_abcdefghijklmnop", "jane.doe@example.com", "7946 0958"):
        assert secret not in out
    assert scrub("sk-proj-abcdefghijkl") == "[SECRET]"


def test_stack_traces_exception_messages_and_extras_are_scrubbed_but_ids_and_times_are_not(
        capsys: pytest.CaptureFixture[str]) -> None:
    """A driver's error quoting a statement's values, raised from another one (the whole chain is written),
    logged by uvicorn as it logs an application's crash: no personal value survives anywhere in the line."""
    configure_tracing("test", None)
    configure_logging("dialogue")
    tracer = trace.get_tracer("test")
    card, email, phone = "4242 4242 4242 4242", "maria.gonzalez@correo.es", "+34 612 345 678"
    with tracer.start_as_current_span("turn") as span:
        try:
            try:
                raise ValueError(f'duplicate key: (email)=({email}) for card {card}')
            except ValueError as inner:
                raise RuntimeError(f"[SQL: INSERT INTO messages] [parameters: ('call me on {phone}',)]") from inner
        except RuntimeError:
            logging.getLogger("uvicorn.error").exception("Exception in ASGI application",
                                                         extra={"supportbot.note": f"for {email}"})
        trace_id = format(span.get_span_context().trace_id, "032x")
        span_id = format(span.get_span_context().span_id, "016x")
    out = capsys.readouterr().out
    for value in (card, "4242424242424242", email, phone, "612 345 678"):
        assert value not in out
    line = json.loads(out.strip().splitlines()[-1])
    assert line["log"]["logger"] == "uvicorn.error"
    assert "[PHONE]" in line["error"]["message"]
    trace_text = line["error"]["stack_trace"]
    assert "ValueError: duplicate key: (email)=([EMAIL]) for card [CARD]" in trace_text  # the cause, too
    assert "RuntimeError" in trace_text and "raise ValueError" in trace_text
    assert line["supportbot"]["note"] == "for [EMAIL]"
    assert line["trace"]["id"] == trace_id and line["span"]["id"] == span_id
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["@timestamp"])


@pytest.mark.parametrize("trace_id", ["ab4111111111111111cdefabcdefabcd", "4539578763621486abcdefabcdefabcd"])
def test_trace_ids_that_look_like_card_numbers_are_kept(trace_id: str) -> None:
    """Digit-only trace ids pass the Luhn check now and then; they are ours, not a customer's."""
    formatter = ScrubbingFormatter()
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "card %s", (trace_id,), None)
    setattr(record, "trace.id", trace_id)
    line = json.loads(formatter.format(record))
    assert line["trace"]["id"] == trace_id
    assert "[CARD]" in line["message"]  # the same digits in free text are masked


def test_warnings_and_uncaught_exceptions_go_through_the_formatter(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("llm")
    try:
        warnings.warn("retrying for jane.roe@example.org", UserWarning, stacklevel=1)
        try:
            raise KeyError("token sk-live0123456789abcdef")
        except KeyError as exc:
            sys.excepthook(type(exc), exc, exc.__traceback__)
    finally:
        sys.excepthook = sys.__excepthook__
    captured = capsys.readouterr()
    assert "jane.roe@example.org" not in captured.out + captured.err
    assert "sk-live0123456789abcdef" not in captured.out + captured.err
    lines = [json.loads(line) for line in captured.out.strip().splitlines()]
    assert any(line["log"]["logger"] == "py.warnings" and "[EMAIL]" in line["message"] for line in lines)
    assert any(line["message"] == "uncaught exception" and "[SECRET]" in line["error"]["stack_trace"]
               for line in lines)
