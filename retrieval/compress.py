"""Extractive context compression: keep only the retrieved sentences nearest the question.

On a CPU the prefill of retrieved text costs more than a short answer: three 190-token chunks take
about a second before the first token (docs/serving.md). Most answers sit in one or two sentences,
so ranking sentences by cosine similarity to the question, with the index's own embedder, and
keeping the best until a token budget is spent cuts the prompt while the answer-bearing sentence
usually stays. This is the extractive-compressor idea of RECOMP (Xu et al., 2023) without a trained
scorer. Kept sentences stay in their document order and under their hit, so citations still hold.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ragtune.core.types import Hit

# A sentence ends at . ! ? (optionally closed by a quote or bracket) before white space, or at a
# line break: list items and headings are sentences of their own.
_BOUNDARY = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))\s+|\s*\n+\s*")

Embed = Callable[[Sequence[str]], np.ndarray]
CountTokens = Callable[[str], int]


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _BOUNDARY.split(text) if s and s.strip()]


@dataclass(frozen=True)
class Compressed:
    """A hit and the part of its text that goes into the prompt."""

    hit: Hit
    text: str


def compress_hits(
    question: str, hits: Sequence[Hit], embed: Embed, count_tokens: CountTokens, budget: int
) -> list[Compressed]:
    """The hits that keep at least one sentence, in rank order, each with its kept sentences.

    Sentences are taken best-first while they fit in `budget` tokens (a longer one is skipped so a
    shorter one may still fit); the single best sentence is always kept, so the prompt never loses
    all its evidence to a tight budget.
    """
    units = [(i, s) for i, h in enumerate(hits) for s in split_sentences(h.chunk.text)]
    if not units:
        return []
    vecs = np.asarray(embed([question] + [s for _, s in units]), dtype=np.float32)
    scores = vecs[1:] @ vecs[0]  # the embedder normalises, so this is cosine similarity
    kept: set[int] = set()
    spent = 0
    for n in np.argsort(-scores, kind="stable"):
        cost = count_tokens(units[n][1]) + 1  # +1: the joining space
        if kept and spent + cost > budget:
            continue
        kept.add(int(n))
        spent += cost
    by_hit: dict[int, list[str]] = {}  # units run in hit order, then document order: both are kept
    for n, (i, s) in enumerate(units):
        if n in kept:
            by_hit.setdefault(i, []).append(s)
    return [Compressed(hit=hits[i], text=" ".join(sents)) for i, sents in by_hit.items()]
