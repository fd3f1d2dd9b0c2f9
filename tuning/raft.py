"""RAFT (retrieval-augmented fine-tuning) examples built from the live index.

A generator that only ever saw its gold passage during training learns to trust whatever it is
shown. RAFT instead shows it what the retriever really returns: for each question with a gold
document, the context is the top-k of the current (or a pinned) snapshot, where the gold chunk is
kept with probability p and the other places hold hard negatives, chunks the retriever ranked high
that come from other documents. The answer cites its source, so the model learns to say where the
answer came from and to ignore the distractors.

Tuning must not import retrieval, so the index is typed by the small protocol below; retrieval's
`Index` satisfies it.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ragtune.core.config import TuningConfig
from ragtune.core.errors import DataError
from ragtune.core.types import ContextBlock, Hit
from ragtune.tuning.cleaning import normalise
from ragtune.tuning.data import Example

__all__ = ["DEFAULT_CITATION", "RaftReport", "RaftSettings", "SearchIndex", "build_raft_examples", "cite"]

DEFAULT_CITATION = "\nSources: {title}"


class SearchIndex(Protocol):
    """What RAFT needs from an index (`ragtune.retrieval.index.Index` fits)."""

    @property
    def snapshot(self) -> str | None: ...

    def search_many(
        self,
        queries: list[str],
        k: int | None = None,
        *,
        mode: str | None = None,
        filters: dict[str, Any] | None = None,
        snapshot: str | None = None,
    ) -> list[list[Hit]]: ...


@dataclass(frozen=True)
class RaftSettings:
    """How RAFT contexts are drawn: k chunks each, the gold one kept with probability p, seeded."""

    k: int
    p: float
    seed: int
    mode: str | None = None  # the search mode; None: retrieval's
    citation: str | None = DEFAULT_CITATION  # appended to answers; None leaves them as they are

    @classmethod
    def from_tuning(cls, tuning: TuningConfig) -> RaftSettings:
        return cls(k=tuning.raft_k, p=tuning.raft_p, seed=tuning.seed, mode=tuning.raft_search_mode)


@dataclass
class RaftReport:
    """What happened to each input example; `lines()` is printed by the CLI."""

    built: int = 0
    gold_kept: int = 0
    skipped_no_gold_doc: int = 0
    skipped_gold_not_indexed: int = 0
    snapshot: str | None = None
    negatives: list[int] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"RAFT: {self.built} examples from snapshot {self.snapshot}; gold chunk kept in {self.gold_kept}"]
        if self.skipped_no_gold_doc:
            out.append(f"RAFT: skipped {self.skipped_no_gold_doc} examples without a doc_id (no gold document)")
        if self.skipped_gold_not_indexed:
            out.append(f"RAFT: skipped {self.skipped_gold_not_indexed} examples whose gold document is not indexed")
        return out


def cite(answer: str, title: str, citation: str | None = DEFAULT_CITATION) -> str:
    """The answer followed by its source, unless it already names one or citing is off."""
    answer = answer.strip()
    if not citation or "sources:" in answer.lower():
        return answer
    return answer + citation.format(title=title or "Untitled")


def _gold_hit(hits: list[Hit], answer: str) -> Hit | None:
    """Among the gold document's hits, the first whose text holds the answer, else the best ranked."""
    if not hits:
        return None
    needle = normalise(answer)
    if len(needle) >= 4:  # "yes", "no" and the like say nothing about which chunk holds the answer
        for h in hits:
            if f" {needle} " in f" {normalise(h.chunk.text)} ":  # whole words only
                return h
    return hits[0]


def _block(hit: Hit) -> ContextBlock:
    return ContextBlock(title=hit.chunk.title, text=hit.chunk.text)


def _refill(
    index: SearchIndex,
    todo: list[Example],
    found: list[list[Hit]],
    filters: Callable[[str], dict[str, Any]],
    k: int,
    mode: str | None,
    snapshot: str,
    short: Callable[[list[Hit]], bool],
) -> None:
    """Search again, filtered, for the examples the wide search left short; one batch per gold document."""
    by_doc: dict[str, list[int]] = defaultdict(list)
    for i, (ex, hits) in enumerate(zip(todo, found, strict=True)):
        if short(hits):
            by_doc[str(ex.doc_id)].append(i)
    for doc_id, rows in by_doc.items():
        results = index.search_many(
            [todo[i].question for i in rows], k, mode=mode, filters=filters(doc_id), snapshot=snapshot
        )
        for i, hits in zip(rows, results, strict=True):
            found[i] = hits


def build_raft_examples(
    examples: list[Example],
    index: SearchIndex,
    settings: RaftSettings,
    *,
    snapshot: str | None = None,
    report: RaftReport | None = None,
) -> list[Example]:
    """Examples with `doc_id` -> RAFT examples (context = real retrieval, gold kept with probability p).

    The gold chunk is the gold document's best retrieved chunk that contains the answer (else its
    best ranked one); negatives are the top-ranked hits from other documents, in retrieval order,
    and the gold chunk goes in at a random position. Examples without a `doc_id`, or whose gold
    document the snapshot does not hold, are skipped and counted in `report`. Seeded: the same
    inputs and index snapshot give the same examples.
    """
    k, p, mode = settings.k, settings.p, settings.mode
    if k < 1:
        raise DataError("RAFT needs k >= 1 retrieved chunks per example")
    if not 0.0 <= p <= 1.0:
        raise DataError(f"RAFT probability p must lie in [0, 1], got {p}")
    rep = report if report is not None else RaftReport()
    snap = snapshot or index.snapshot
    rep.snapshot = snap
    if snap is None:
        raise DataError("RAFT needs an index with documents: ingest the corpus first")
    todo = [e for e in examples if e.doc_id]
    rep.skipped_no_gold_doc = len(examples) - len(todo)
    if not todo:
        raise DataError("RAFT needs examples with a 'doc_id' naming their gold document; none has one")
    questions = [e.question for e in todo]
    # One wide unfiltered search usually yields both the gold chunk and k non-gold negatives.
    wide = index.search_many(questions, 3 * k, mode=mode, snapshot=snap)
    gold_hits = [[h for h in hits if h.chunk.doc_id == e.doc_id] for e, hits in zip(todo, wide, strict=True)]
    negatives = [[h for h in hits if h.chunk.doc_id != e.doc_id] for e, hits in zip(todo, wide, strict=True)]
    _refill(index, todo, gold_hits, lambda d: {"doc_id": d}, k, mode, snap, lambda hs: not hs)
    _refill(index, todo, negatives, lambda d: {"doc_id": {"$ne": d}}, k, mode, snap, lambda hs: len(hs) < k)
    rng = random.Random(settings.seed)
    out: list[Example] = []
    for ex, golds, negs in zip(todo, gold_hits, negatives, strict=True):
        gold = _gold_hit(golds, ex.answer)
        keep_gold = rng.random() < p
        if gold is None:
            rep.skipped_gold_not_indexed += 1
            continue
        chosen = negs[: k - 1] if keep_gold else negs[:k]
        blocks = [_block(h) for h in chosen]
        if keep_gold:
            blocks.insert(rng.randrange(len(blocks) + 1), _block(gold))
            rep.gold_kept += 1
        rep.negatives.append(len(chosen))
        out.append(
            ex.model_copy(
                update={
                    "context": blocks,
                    "answer": cite(ex.answer, gold.chunk.title or ex.title or "", settings.citation),
                    "group": ex.group or str(ex.doc_id),
                }
            )
        )
    rep.built = len(out)
    if not out:
        raise DataError("RAFT built no example: no gold document of the data is in the index")
    return out
