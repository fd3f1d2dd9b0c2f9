"""Drop what would only teach noise, and say so: empty fields, exact and near duplicates.

Over-long examples are handled at tokenisation (`encode.py`), where their length is known; their
count joins this account there.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field

from ragtune.tuning.data import Example

_PUNCT = re.compile(r"[^\w\s]", re.UNICODE)
_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    """Case-, accent-, punctuation- and whitespace-insensitive form used for near-duplicate hashing."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c))
    return _SPACE.sub(" ", _PUNCT.sub(" ", text.lower())).strip()


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


@dataclass
class CleanReport:
    """How many rows went where; `lines()` is the printed account."""

    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    truncated: int = 0

    def drop(self, reason: str, n: int = 1) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + n

    def lines(self) -> list[str]:
        out = [f"kept {self.kept} examples"]
        out += [f"dropped {n}: {reason}" for reason, n in sorted(self.dropped.items()) if n]
        if self.truncated:
            out.append(f"truncated {self.truncated}: longer than max_length")
        return out

    def as_dict(self) -> dict[str, int]:
        return {"kept": self.kept, "truncated": self.truncated, **{f"dropped_{k}": v for k, v in self.dropped.items()}}


def clean_examples(examples: list[Example], near_duplicates: bool = True) -> tuple[list[Example], CleanReport]:
    """Keep the first of each duplicate; a near duplicate equals another after `normalise`."""
    report = CleanReport()
    seen_exact: set[str] = set()
    seen_near: set[str] = set()
    kept: list[Example] = []
    for ex in examples:
        if not ex.question.strip():
            report.drop("empty question")
            continue
        if not ex.answer.strip():
            report.drop("empty answer")
            continue
        ctx = "\x1e".join(f"{c.title}\x1d{c.text}" for c in ex.context)
        exact = _digest(ex.question, ex.answer, ctx)
        if exact in seen_exact:
            report.drop("exact duplicate")
            continue
        near = _digest(normalise(ex.question), normalise(ex.answer), normalise(ctx))
        if near_duplicates and near in seen_near:
            report.drop("near duplicate (same text after normalising case, accents, punctuation)")
            continue
        seen_exact.add(exact)
        seen_near.add(near)
        kept.append(ex)
    report.kept = len(kept)
    return kept, report
