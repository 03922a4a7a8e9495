from __future__ import annotations

import json
import logging

import pytest
from opentelemetry import trace

from supportbot.logging import configure_logging, scrub
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
    assert scrub("sk-proj-abcdefghijkl") == "[REDACTED_KEY]"
