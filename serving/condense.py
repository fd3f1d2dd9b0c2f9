"""A chat follow-up ("and how long is its warranty?") made into a retrieval query that stands alone
(`serving.condense`); the answer prompt still quotes the conversation itself.

last_turns  the question, then the user's earlier turns, newest first, `serving.condense_turns` in
            all: cheap and deterministic. The question leads, so an embedder that truncates long input
            loses the oldest turn, never the question.
model       the generator (base model, greedy) rewrites the question as a standalone one, asked through
            the prompt builder (`PromptBuilder.condense_messages`). A reply that is not one question,
            or is the follow-up unchanged, falls back to last_turns: small models (the bundled 135M
            one) tend to answer instead of rewriting, so this mode suits a capable generator.
off         the last message alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Literal

from ragtune.core.prompt import Messages

CondenseMode = Literal["model", "last_turns", "off"]
REWRITE_MAX_TOKENS = 48
MAX_REWRITE_CHARS = 400
MAX_QUERY_CHARS = 2000  # beyond what the embedder reads (256 tokens); bounds the lexical query's terms
_LABEL = re.compile(r"^((standalone|rewritten|follow-up) )?question\s*:\s*", re.IGNORECASE)


def user_turns(history: Messages) -> list[str]:
    return [t["content"].strip() for t in history if t.get("role") == "user" and t.get("content", "").strip()]


def last_turns_query(question: str, history: Messages, turns: int) -> str:
    """The question, then up to `turns - 1` earlier user turns, newest first, within MAX_QUERY_CHARS."""
    earlier = user_turns(history)[-(turns - 1) :] if turns > 1 else []
    return " ".join([question.strip(), *reversed(earlier)])[:MAX_QUERY_CHARS]


def clean_rewrite(text: str, question: str) -> str | None:
    """The rewrite's first line without a label or quotes, if it is one question other than the
    follow-up itself; else None."""
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    line = _LABEL.sub("", line).strip().strip("\"'").strip()
    if not 3 <= len(line) <= MAX_REWRITE_CHARS or not line.endswith("?") or line.count("?") > 1:
        return None
    return None if line.casefold() == question.strip().casefold() else line


def condense(mode: CondenseMode, question: str, history: Messages, turns: int, rewrite: Callable[[], str]) -> str:
    """The retrieval query for `question` after `history`; `rewrite` runs the generator (model mode only)."""
    if mode == "off" or not user_turns(history):
        return question
    if mode == "model":
        rewritten = clean_rewrite(rewrite(), question)
        if rewritten is not None:
            return rewritten
    return last_turns_query(question, history, turns)
