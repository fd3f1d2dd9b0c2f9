"""answers.jsonl: every question with each arm's answer, so a verdict's figures can be read, not just
trusted; and the few questions where the arms disagree most, for the report to show side by side."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from ragtune.eval.harness import metrics

if TYPE_CHECKING:  # records are only read here
    from ragtune.eval.harness.runner import Record

SHOWN = 5  # questions the report shows side by side


class ArmAnswer(BaseModel):
    answer: str
    extracted: str
    f1: float
    retrieved: list[str] = Field(default_factory=list, description="ranked distinct doc ids")
    scores: dict[str, float | None] = Field(default_factory=dict)


class QuestionAnswers(BaseModel):
    id: str
    question: str
    golds: list[str]
    gold_docs: list[str] = Field(default_factory=list)
    answers: dict[str, ArmAnswer] = Field(description="arm -> its answer (extra training seeds as arm:seedN)")


def collect(records: Sequence[Record]) -> list[QuestionAnswers]:
    """One row per question, in run order, with every arm's (first) answer to it."""
    rows: dict[str, QuestionAnswers] = {}
    for r in records:
        row = rows.setdefault(
            r.id, QuestionAnswers(id=r.id, question=r.question, golds=r.golds, gold_docs=r.gold_docs, answers={})
        )
        row.answers.setdefault(
            r.arm, ArmAnswer(answer=r.answer, extracted=r.extracted, f1=r.f1, retrieved=r.retrieved, scores=r.scores)
        )
    return list(rows.values())


def write_answers(path: Path, rows: Sequence[QuestionAnswers]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(row.model_dump_json() + "\n")
    return path


def _disagreement(row: QuestionAnswers, arms: Sequence[str]) -> tuple[float, int]:
    """(range of the arms' scores, distinct normalised answers): larger is more disagreement."""
    mine = [row.answers[a] for a in arms if a in row.answers]
    if not mine:
        return 0.0, 0
    f1 = [a.f1 for a in mine]
    return max(f1) - min(f1), len({metrics.normalize(a.extracted) for a in mine})


def disagreements(rows: Sequence[QuestionAnswers], arms: Sequence[str], n: int = SHOWN) -> list[QuestionAnswers]:
    """The n questions where `arms` disagree most (score range, then distinct answers), each showing
    only those arms; questions where all agree are left out."""
    ranked = sorted(rows, key=lambda r: _disagreement(r, arms), reverse=True)
    out = []
    for row in ranked[:n]:
        spread, distinct = _disagreement(row, arms)
        if spread > 0 or distinct > 1:
            out.append(row.model_copy(update={"answers": {a: row.answers[a] for a in arms if a in row.answers}}))
    return out
