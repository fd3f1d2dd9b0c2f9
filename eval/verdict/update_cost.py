"""Update cost: what each arm pays to absorb a document change, and whether it then knows the new facts.

rag and hybrid absorb a change by re-ingesting the new versions (timed: chunk, embed, commit);
ft has to be re-trained. The re-tune continues the deployed adapter on examples teaching only the
changed facts, built from the new documents' own sentences in the house style, which is the
cheapest honest way a fine-tune-only deployment could learn them. Then every arm is asked the
changed-fact questions on the new snapshot.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ragtune.core.config import Config
from ragtune.core.types import ContextBlock, Document
from ragtune.eval.harness.arms import ArmSpec
from ragtune.eval.harness.data import EvalItem
from ragtune.eval.harness.runner import Record, RunSettings, Scoring, run_arms
from ragtune.eval.verdict.recommend import UpdateCost
from ragtune.retrieval.index import Index
from ragtune.serving.pipeline import Pipeline
from ragtune.tuning.data import Example

RETUNED = "verdict-ft-retuned"

# (examples, adapter name, init adapter name) -> training wall time in seconds
Retrain = Callable[[list[Example], str, str], float]


@dataclass
class UpdateOutcome:
    costs: list[UpdateCost]
    records: list[Record]
    snapshot_before: str | None
    snapshot_after: str | None
    retune_examples: int
    notes: list[str] = field(default_factory=list)


def _sentence_with(text: str, answer: str) -> str | None:
    for sentence in re.split(r"(?<=[.!?])\s+", text):
        if answer.lower() in sentence.lower():
            return sentence.strip()
    return None


def update_examples(items: Sequence[EvalItem], docs: dict[str, Document]) -> list[Example]:
    """House-style training examples teaching the changed facts, from the new documents' own sentences."""
    out: list[Example] = []
    for it in items:
        doc = next((docs[d] for d in it.doc_ids if d in docs), None)
        if doc is None:
            continue
        sentence = next((s for a in it.answers if (s := _sentence_with(doc.text, a))), None)
        if sentence is None:
            continue
        out.append(
            Example(
                question=it.question,
                answer=f"{sentence}\nSources: {doc.title}",
                context=[ContextBlock(title=doc.title, text=sentence)],
                group=doc.id,
                doc_id=doc.id,
                title=doc.title,
            )
        )
    return out


def absorb_update(
    config: Config,
    index: Index,
    pipeline: Pipeline,
    arms: Sequence[ArmSpec],
    new_docs: Sequence[Document],
    changed: Sequence[EvalItem],
    retrain: Retrain,
    scoring: Scoring | None = None,
) -> UpdateOutcome:
    """Re-ingest for the retrieving arms, re-tune the ft arm's adapter, then ask the changed facts.

    `arms` are the arms as deployed before the change; an `ft` arm among them is replaced by the
    re-tuned adapter (continued from its own adapter), the others keep theirs.
    """
    before = index.snapshot
    t0 = time.perf_counter()
    report = index.upsert(list(new_docs))
    ingest_s = time.perf_counter() - t0
    notes = [f"the update ({report.summary()}) was ingested and committed in {ingest_s:.2f} s"]

    examples = update_examples(changed, {d.id: d for d in new_docs})
    ft = next((a for a in arms if a.mode == "ft" and a.adapter), None)
    retune_s: float | None = None
    after_arms = [a for a in arms if a.mode != "ft"]
    if ft is None:
        notes.append("no ft arm: nothing to re-tune")
    elif not examples:
        notes.append("no changed fact could be located in the new documents: ft was not re-tuned")
    else:
        assert ft.adapter is not None
        retune_s = retrain(examples, RETUNED, ft.adapter)
        after_arms.append(ft.model_copy(update={"adapter": RETUNED}))
        notes.append(
            f"ft absorbed the change by continuing its adapter for {config.verdict.retune_epochs:g} epochs on "
            f"{len(examples)} examples built from the changed sentences of the new documents"
        )
    records = run_arms(
        pipeline, list(changed), after_arms, config, RunSettings(scoring=scoring, snapshot=index.snapshot)
    )

    def cost(a: ArmSpec) -> tuple[str, float | None]:
        if a.retrieves:
            return "ingest", ingest_s
        if a.mode == "ft":
            return "retune", retune_s
        return "none", None

    costs = []
    for a in after_arms:
        method, seconds = cost(a)
        mine = [r.contains for r in records if r.arm == a.name and r.contains is not None]
        costs.append(
            UpdateCost(
                arm=a.name,
                method=method,
                seconds=seconds,
                changed_correct=sum(mine) / len(mine) if mine else None,
                n_changed=len(changed),
            )
        )
    return UpdateOutcome(costs, records, before, index.snapshot, len(examples), notes)
