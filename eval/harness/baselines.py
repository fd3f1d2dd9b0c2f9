"""Trivial baselines, scored like arms: what a setup must beat before it is worth running.

- `constant`: one answer for every question, the most frequent answer of the training data after the
  eval's answer extraction and the metrics' normalisation. On a yes/no/maybe set it is "always yes",
  which a generator that only learned the label prior cannot beat.
- `extractive`: no generator at all: the retrieved sentence nearest the question (the top-k chunks
  split into sentences, ranked by the retriever's embedder with `retrieval.compress`). A generator
  over the same retrieval that scores below it adds nothing but latency.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Literal

from rich.console import Console

from ragtune.core.config import Config
from ragtune.core.errors import DataError
from ragtune.core.types import Answer, Citation, Timings
from ragtune.eval.harness import metrics
from ragtune.eval.harness.arms import ArmSpec, EvalSuite
from ragtune.eval.harness.backends import Backend, InProcessBackend
from ragtune.eval.harness.data import EvalItem
from ragtune.retrieval.compress import compress_hits
from ragtune.retrieval.index import Index

Baseline = Literal["constant", "extractive"]
BASELINES: tuple[Baseline, ...] = ("constant", "extractive")
EVALSET_CONSTANT = "constant-evalset"  # the eval set's own majority: optimistic, it has seen the answers


def majority_answer(answers: Iterable[str], answer_regex: str | None = None) -> str | None:
    """The most frequent answer after extraction and normalisation (ties: the first seen), or None."""
    counts = Counter(n for n in (metrics.normalize(metrics.extract(a, answer_regex)) for a in answers) if n)
    return counts.most_common(1)[0][0] if counts else None


def baseline_arms(
    kinds: Sequence[Baseline], constant: str | None, constant_name: str = "constant"
) -> tuple[list[ArmSpec], list[str]]:
    """The baseline arms to run, and a note for each one that cannot be."""
    arms: list[ArmSpec] = []
    notes: list[str] = []
    for kind in kinds:
        if kind == "extractive":
            arms.append(ArmSpec(name="extractive", mode="rag", baseline="extractive"))
        elif constant:
            arms.append(ArmSpec(name=constant_name, mode="base", baseline="constant", constant=constant))
        else:
            notes.append("no constant baseline: no non-empty answer to take the majority of")
    return arms, notes


def index_of(backend: object) -> Index | None:
    """The in-process index with at least one commit, or None (over HTTP there is none to read)."""
    if not isinstance(backend, InProcessBackend):
        return None
    index = backend.pipeline.index
    return index if index is not None and index.snapshot is not None else None


def _constant(questions: Sequence[str], arm: ArmSpec) -> list[Answer]:
    return [Answer(answer=arm.constant or "", mode=arm.mode) for _ in questions]


def _extractive(backend: Backend, questions: Sequence[str], arm: ArmSpec, snapshot: str | None, k: int) -> list[Answer]:
    index = index_of(backend)
    if index is None or not isinstance(backend, InProcessBackend):
        raise DataError(f"arm '{arm.name}': the extractive baseline needs an in-process index with documents")
    t0 = time.perf_counter()
    snapshot = snapshot or index.snapshot
    with backend.pipeline.index_lock:
        rows = index.search_many(list(questions), arm.top_k or k, mode=arm.search_mode, snapshot=snapshot)
    out: list[Answer] = []
    for q, hits in zip(questions, rows, strict=True):
        # a budget of 0 keeps exactly the single best sentence (compress_hits always keeps one)
        kept = compress_hits(q, hits, index.embed, lambda _s: 1, 0) if hits else []
        cites = [
            Citation(
                n=1, doc_id=c.hit.chunk.doc_id, chunk_id=c.hit.chunk.id, title=c.hit.chunk.title, score=c.hit.score
            )
            for c in kept[:1]
        ]
        out.append(Answer(answer=kept[0].text if kept else "", mode=arm.mode, snapshot=snapshot, citations=cites))
    ms = (time.perf_counter() - t0) * 1000 / max(1, len(questions))
    for a in out:
        a.timings = Timings(retrieve_ms=round(ms, 2), total_ms=round(ms, 2))
    return out


def answer_baseline(
    backend: Backend, questions: Sequence[str], arm: ArmSpec, snapshot: str | None, top_k: int
) -> list[Answer]:
    """The baseline arm's answers; `top_k` is the retrieval depth when the arm names none."""
    if arm.baseline == "constant":
        return _constant(questions, arm)
    if arm.baseline == "extractive":
        return _extractive(backend, questions, arm, snapshot, top_k)
    raise DataError(f"arm '{arm.name}' is not a baseline")


def _constant_for(suite: EvalSuite, items: Sequence[EvalItem], answer_regex: str | None) -> tuple[str | None, str, str]:
    """(answer, arm name, what it is): the training majority when the suite names training data,
    else the eval set's own majority, named and described as such."""
    if suite.train is not None:
        from ragtune.tuning.data import load_examples

        answer = majority_answer((ex.answer for ex in load_examples(suite.train)), answer_regex)
        return answer, "constant", f"the most frequent answer of the training data ({suite.train.name})"
    answer = majority_answer((it.answers[0] for it in items if it.answers), answer_regex)
    what = (
        "the most frequent gold answer of this eval set itself (no training data given: this eval-set majority "
        "is optimistic, it has seen the answers; name training data with `train:` in the suite)"
    )
    return answer, EVALSET_CONSTANT, what


def with_baselines(
    config: Config, suite: EvalSuite, items: Sequence[EvalItem], backend: Backend, answer_regex: str | None
) -> tuple[EvalSuite, list[str]]:
    """The suite with `eval.baselines` appended as arms, and one line per baseline saying what it is."""
    kinds = list(config.eval.baselines)
    if not kinds or not any(it.answers for it in items):
        return suite, []
    notes: list[str] = []
    constant, name, what = _constant_for(suite, items, answer_regex) if "constant" in kinds else (None, "", "")
    if "extractive" in kinds and index_of(backend) is None:
        kinds.remove("extractive")
        note = "extractive baseline skipped: no index with documents to retrieve from (an HTTP endpoint or empty index)"
        Console(stderr=True).print(note)
        notes.append(note)
    arms, skipped = baseline_arms(kinds, constant, name)
    taken = {a.name for a in suite.arms}
    arms = [a for a in arms if a.name not in taken]
    for a in arms:
        if a.baseline == "constant":
            notes.append(f'{a.name} answers "{a.constant}" to every question: {what}.')
        else:
            notes.append(
                f"{a.name} answers with the retrieved sentence nearest the question (the top-{config.retrieval.top_k} "
                "chunks split into sentences, ranked by the retriever's embedder); no generator."
            )
    return suite.model_copy(update={"arms": [*suite.arms, *arms]}), notes + skipped
