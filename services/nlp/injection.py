"""A prompt-injection score (0 to 1): a guardrail signal, not a verdict."""

from __future__ import annotations

import re

# (pattern, weight): phrasings that try to override the assistant's instructions or extract them.
_SIGNALS: tuple[tuple[re.Pattern[str], float], ...] = tuple((re.compile(p, re.IGNORECASE), w) for p, w in (
    (r"\b(ignore|disregard|forget|override)\b.{0,40}\b(previous|prior|above|earlier|all|your)\b.{0,20}"
     r"\b(instructions?|prompts?|rules|directions|guidelines)\b", 0.8),
    (r"\b(system|developer|hidden|initial)\s+(prompt|message|instructions?)\b", 0.5),
    (r"\b(reveal|show|print|repeat|output|leak)\b.{0,30}\b(prompt|instructions?|rules|secret|api key)\b", 0.5),
    (r"\byou are (now|no longer)\b", 0.4),
    (r"\b(act|behave|pretend|roleplay) (as|like|to be)\b", 0.3),
    (r"\b(jailbreak|dan mode|developer mode|god mode|do anything now)\b", 0.7),
    (r"\bnew (instructions?|rules|persona)\b", 0.4),
    (r"<\s*/?\s*(system|assistant|im_start|im_end)\s*>|\[/?INST\]|###\s*(system|instruction)", 0.6),
    (r"(以前|前|上記)の(指示|命令|プロンプト)を(無視|忘れ)", 0.8),
    (r"システムプロンプト", 0.5),
    (r"(ロールプレイ|なりきって|として振る舞)", 0.3),
))


def injection_score(text: str) -> float:
    """Combine the matched signals as independent evidence: 1 - Π(1 - w)."""
    remaining = 1.0
    for pattern, weight in _SIGNALS:
        if pattern.search(text):
            remaining *= 1.0 - weight
    return round(1.0 - remaining, 4)
