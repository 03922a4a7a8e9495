"""`supportbot eval conversations`: scripted multi-turn conversations against a running system.

A suite is YAML: `conversations: [{name, turns: [{say, expect: {...}}]}]`. Expectations per turn:
`intent` (a name or a list of accepted names), `handoff` (bool), `reply_contains` (all of, case-insensitive),
`reply_contains_any`, `reply_not_contains`, `source` (a cited source path contains it), `no_sources`,
`language`, `flow`, `provider`, `no_reply` (the bot stays silent once a person has taken over).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from pydantic import BaseModel, ConfigDict, Field


class Expect(BaseModel):
    model_config = ConfigDict(extra="forbid")

    intent: str | list[str] | None = None
    handoff: bool | None = None
    reply_contains: list[str] = Field(default_factory=list)
    reply_contains_any: list[str] = Field(default_factory=list)
    reply_not_contains: list[str] = Field(default_factory=list)
    source: str | None = None
    no_sources: bool | None = None
    language: str | None = None
    flow: str | None = None
    provider: str | None = None
    no_reply: bool | None = None
    """True: the bot stays silent (a person has taken over)."""


class Turn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    say: str
    expect: Expect = Field(default_factory=Expect)


class ScriptedConversation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    turns: list[Turn] = Field(min_length=1)


class Suite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    conversations: list[ScriptedConversation] = Field(min_length=1)


@dataclass
class ConversationResult:
    name: str
    failures: list[str] = field(default_factory=list)
    turns: int = 0
    turns_passed: int = 0

    @property
    def passed(self) -> bool:
        return not self.failures


def check(expect: Expect, body: dict[str, Any]) -> list[str]:
    """Every expectation the gateway's answer does not meet, as readable strings."""
    failures = []
    reply = (body.get("reply") or {}).get("text", "")
    lowered = reply.lower()
    intent = (body.get("intent") or {}).get("name")
    if expect.intent is not None:
        accepted = [expect.intent] if isinstance(expect.intent, str) else expect.intent
        if intent not in accepted:
            failures.append(f"intent {intent!r} not in {accepted}")
    if expect.handoff is not None and body.get("handoff") != expect.handoff:
        failures.append(f"handoff {body.get('handoff')} != {expect.handoff}")
    failures += [f"reply lacks {s!r}" for s in expect.reply_contains if s.lower() not in lowered]
    if expect.reply_contains_any and not any(s.lower() in lowered for s in expect.reply_contains_any):
        failures.append(f"reply has none of {expect.reply_contains_any}")
    failures += [f"reply contains {s!r}" for s in expect.reply_not_contains if s.lower() in lowered]
    paths = [s.get("path", "") for s in body.get("sources", [])]
    if expect.source is not None and not any(expect.source in p for p in paths):
        failures.append(f"no cited source matches {expect.source!r} (cited: {paths})")
    if expect.no_sources and paths:
        failures.append(f"expected no sources, cited {paths}")
    for key in ("language", "flow", "provider"):
        wanted = getattr(expect, key)
        actual = (body.get("reply") or {}).get("language") if key == "language" else body.get(key)
        if wanted is not None and actual != wanted:
            failures.append(f"{key} {actual!r} != {wanted!r}")
    if expect.no_reply is not None and (body.get("reply") is None) != expect.no_reply:
        failures.append("the bot replied" if expect.no_reply else "the bot stayed silent")
    return failures


def run_suite(suite: Suite, *, url: str, key: str, timeout_s: float = 60.0) -> list[ConversationResult]:
    results = []
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=url, headers=headers, timeout=timeout_s) as client:
        for scripted in suite.conversations:
            result = ConversationResult(scripted.name)
            created = client.post("/v1/conversations", json={"channel": "api"})
            if created.status_code != 201:
                result.failures.append(f"could not create a conversation: {created.status_code} {created.text[:200]}")
                results.append(result)
                continue
            conversation_id = created.json()["id"]
            for number, turn in enumerate(scripted.turns, start=1):
                result.turns += 1
                response = client.post(f"/v1/conversations/{conversation_id}/messages", json={"text": turn.say})
                failures = ([f"HTTP {response.status_code}: {response.text[:200]}"] if response.status_code != 200
                            else check(turn.expect, response.json()))
                if failures:
                    result.failures += [f"turn {number} ({turn.say!r}): {f}" for f in failures]
                else:
                    result.turns_passed += 1
            results.append(result)
    return results


def load_suite(path: Path) -> Suite:
    return Suite.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))


def summary(results: list[ConversationResult]) -> dict[str, Any]:
    passed = sum(r.passed for r in results)
    turns = sum(r.turns for r in results)
    return {
        "conversations": len(results), "conversations_passed": passed,
        "pass_rate": round(passed / len(results), 4) if results else 0.0,
        "turns": turns, "turns_passed": sum(r.turns_passed for r in results),
        "failures": {r.name: r.failures for r in results if r.failures},
    }
