"""The proof: a hosted LLM that hangs costs no customer the answer.

The whole stack (gateway → dialogue → nlp, llm, real PostgreSQL and Redis) with the OpenAI provider pointed at
a fake server that accepts every request and answers none of them in time (it sleeps 30 s), and llm's
production retry settings (30 s read timeout, 2 retries). The turn deadline is 5 s here instead of 20 s
(TURN_DEADLINE_S), the structure the same: 100 turns at once, every one answered 200 before the deadline by the
offline responder, no 504; usage rows only for the answers delivered, none for the hanging provider, at most
one attempt per turn on it (no retry that could not finish); and its breaker open after a few more cut attempts.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from services.llm.breaker import OPEN
from services.llm.storage import UsageEvent
from supportbot.db import utcnow
from tests.fake_openai import FakeOpenAI
from tests.stack import in_process_stack

pytestmark = pytest.mark.anyio

DEADLINE_S = 6.0
TURNS = 100


async def _turn(stack: Any, conversation_id: str, text: str) -> tuple[int, float, dict[str, Any]]:
    started = time.monotonic()
    response = await stack.client.post(f"/v1/conversations/{conversation_id}/messages", headers=stack.auth,
                                       json={"text": text}, timeout=60)
    took = time.monotonic() - started
    return response.status_code, took, response.json()


async def test_a_hanging_provider_still_answers_every_turn_before_the_deadline(
        postgres_url: str, redis_url: str, data_dir: Path, model_cache_dir: Path, fake_openai: FakeOpenAI,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Four services share one event loop here: the per-request INFO lines alone would cost the burst seconds.
    monkeypatch.setenv("LOG_LEVEL", "WARNING")
    async with in_process_stack(
            database_url=postgres_url, redis_url=redis_url, data_dir=data_dir, model_dir=model_cache_dir,
            openai_base_url=fake_openai.base_url, openai_api_key="sk-test",
            gateway_settings={"turn_deadline_s": DEADLINE_S, "rate_limit_per_key": "100000/minute",
                              "rate_limit_per_tenant": "100000/minute"},
            dialogue_settings={"llm_reserve_s": 2.5},
            llm_settings={"openai_timeout_s": 30.0, "openai_max_retries": 2}) as stack:
        conversations = [await stack.new_conversation() for _ in range(TURNS)]
        # A system that was answering (its knowledge index embedded), until the hosted LLM starts to hang.
        warm = await _turn(stack, await stack.new_conversation(), "How long does standard shipping take?")
        assert warm[0] == 200 and warm[2]["provider"] == "openai", warm
        fake_openai.fault = "timeout"  # from now on every request is accepted and not answered for 30 s
        healthy_calls = fake_openai.calls
        await stack.apps["llm"].state.recorder.flush()
        since = utcnow()
        results = await asyncio.gather(*(
            _turn(stack, conversation_id, f"How long does standard shipping take to zone {i}?")
            for i, conversation_id in enumerate(conversations)))
        breaker = next(link.breaker for link in stack.apps["llm"].state.generator.failover.links
                       if link.provider.name == "openai")
        calls_in_burst = fake_openai.calls - healthy_calls
        after = [await _turn(stack, conversations[i], "And how long does express shipping take?") for i in range(5)]
        breaker_state = await breaker.state()
        await stack.apps["llm"].state.recorder.flush()
        async with stack.apps["llm"].state.sessions() as session:
            rows = (await session.execute(select(UsageEvent.provider, UsageEvent.outcome, func.count())
                                          .where(UsageEvent.created_at > since)
                                          .group_by(UsageEvent.provider, UsageEvent.outcome))).all()

    statuses = [status for status, _, _ in results]
    latencies = sorted(took for _, took, _ in results)
    print(f"\n{TURNS} turns, provider hanging, TURN_DEADLINE_S={DEADLINE_S}: statuses "
          f"{ {s: statuses.count(s) for s in set(statuses)} }, latency p50 {latencies[TURNS // 2]:.2f} s, "
          f"max {latencies[-1]:.2f} s; then {[round(took, 2) for _, took, _ in after]} s; usage rows {rows}")
    assert statuses == [200] * TURNS, "every turn answered, no 504"
    assert latencies[-1] <= DEADLINE_S, f"the slowest turn took {latencies[-1]:.2f} s"
    bodies = [body for _, _, body in results]
    assert all(body["provider"] == "offline" and "llm_unavailable" in body["degraded_reasons"]
               and body["reply"]["text"] for body in bodies), {b["provider"] for b in bodies}

    # llm answered them itself (its offline responder, after cutting the hanging attempt), or dialogue did when
    # llm could not in its share of the time: one usage row per answer llm delivered, none for the hanging
    # provider (its cut attempts were never paid answers).
    through_llm = sum(1 for body in bodies if body["usage"] is not None)
    by_outcome = {(provider, outcome): count for provider, outcome, count in rows}
    assert not any(provider == "openai" for provider, _ in by_outcome), by_outcome
    delivered_rows = sum(count for (_, outcome), count in by_outcome.items() if outcome != "caller_gone")
    assert delivered_rows == through_llm + sum(1 for _, _, body in after if body["usage"] is not None)
    assert calls_in_burst <= TURNS, "one attempt per turn at most: no retry started that could not finish"

    # The turns after the burst are answered in time too, and the breaker is open (five cut attempts at most;
    # in this one-process stack a caller that gives up cancels llm's work with it, so burst attempts that end
    # cancelled rather than cut do not count).
    assert all(status == 200 and took <= DEADLINE_S for status, took, _ in after), after
    assert breaker_state == OPEN, "cut attempts count as the hanging provider's failures"
