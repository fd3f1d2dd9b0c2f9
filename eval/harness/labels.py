"""Label tasks (yes/no/maybe, multiple-choice letters): accuracy, macro-F1 and confusion per arm.

Token F1 hides what a label task's arms do: an arm that answers "yes" to everything scores as
well as the share of yes-questions. When the gold answers form a small closed set, every answer
is mapped to one of the labels (or "other") and the report shows each arm's prediction
distribution and confusion matrix, so "always yes" is visible at a glance.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from ragtune.eval.harness import metrics
from ragtune.eval.harness.markdown import md_table

if TYPE_CHECKING:  # records are only read; the runner (and the model stack it imports) is not needed here
    from ragtune.eval.harness.runner import Record

MAX_LABELS = 10
OTHER = "other"


class ArmLabels(BaseModel):
    arm: str
    n: int
    accuracy: float
    macro_f1: float
    distribution: dict[str, int] = Field(description="predicted label -> count (labels, then 'other')")
    confusion: dict[str, dict[str, int]] = Field(description="gold label -> predicted label -> count")


class LabelReport(BaseModel):
    labels: list[str]
    arms: list[ArmLabels]


def detect_labels(golds: Sequence[Sequence[str]], max_labels: int = MAX_LABELS) -> list[str] | None:
    """The closed label set, most frequent first, when every item's answers come from at most
    `max_labels` distinct normalised answers, each the first gold of at least two items; else None."""
    if len(golds) < 4 or any(not g for g in golds):
        return None
    first = Counter(metrics.normalize(g[0]) for g in golds)
    every = {metrics.normalize(a) for g in golds for a in g}
    if "" in every or len(every) > max_labels or set(first) != every or min(first.values()) < 2:
        return None
    return [label for label, _ in first.most_common()]


def to_label(answer: str, extracted: str, labels: Sequence[str]) -> str:
    """The label an answer gives: its extracted span when it is one, else a label it starts with,
    else the one label it names as a whole word; "other" when none or several fit."""
    span = metrics.normalize(extracted)
    if span in labels:
        return span
    text = metrics.normalize(answer)
    for label in sorted(labels, key=len, reverse=True):
        if f"{text} ".startswith(f"{label} ") or f"{span} ".startswith(f"{label} "):
            return label
    named = [label for label in labels if f" {label} " in f" {text} "]
    return named[0] if len(named) == 1 else OTHER


def _macro_f1(pairs: Sequence[tuple[str, str]], labels: Sequence[str]) -> float:
    """Mean over the labels of per-label F1 (gold, predicted); "other" is a wrong answer, not a class."""
    scores = []
    for label in labels:
        tp = sum(g == label and p == label for g, p in pairs)
        wrong = sum((g == label) != (p == label) for g, p in pairs)
        scores.append(2 * tp / (2 * tp + wrong) if tp + wrong else 0.0)
    return sum(scores) / len(scores) if scores else 0.0


def arm_labels(arm: str, records: Sequence[Record], labels: Sequence[str]) -> ArmLabels:
    pairs: list[tuple[str, str]] = []
    right = 0
    for r in records:
        pred = to_label(r.answer, r.extracted, labels)
        golds = {metrics.normalize(g) for g in r.golds}
        right += pred in golds
        pairs.append((metrics.normalize(r.golds[0]) if r.golds else OTHER, pred))
    columns = [*labels, OTHER]
    dist = Counter(p for _, p in pairs)
    return ArmLabels(
        arm=arm,
        n=len(pairs),
        accuracy=right / len(pairs) if pairs else 0.0,
        macro_f1=_macro_f1(pairs, labels),
        distribution={c: dist[c] for c in columns},
        confusion={g: {c: sum(gg == g and p == c for gg, p in pairs) for c in columns} for g in labels},
    )


def label_report(records: Sequence[Record], arms: Sequence[str] | None = None) -> LabelReport | None:
    """Label figures for each arm (default: every arm in the records), or None if not a label task."""
    arms = list(arms) if arms is not None else list(dict.fromkeys(r.arm for r in records))
    first_arm = [r for r in records if arms and r.arm == arms[0]]
    labels = detect_labels([r.golds for r in first_arm])
    if labels is None:
        return None
    return LabelReport(
        labels=labels, arms=[arm_labels(a, [r for r in records if r.arm == a and r.golds], labels) for a in arms]
    )


def label_tables(rep: LabelReport) -> list[tuple[str, list[str], list[list[str]]]]:
    """The label figures as (title, header, rows): one summary table, then each arm's confusion matrix."""
    columns = [*rep.labels, OTHER]
    summary = [
        [
            a.arm,
            f"{a.accuracy:.3f}",
            f"{a.macro_f1:.3f}",
            ", ".join(f"{c} {a.distribution[c]}" for c in columns if a.distribution.get(c)),
        ]
        for a in rep.arms
    ]
    tables = [
        (
            f"Label task ({'/'.join(rep.labels)}): accuracy, macro-F1 and what each arm predicts",
            ["arm", "accuracy", "macro-F1", "predictions"],
            summary,
        )
    ]
    for a in rep.arms:
        rows = [[f"gold {g}", *(str(a.confusion[g][c]) for c in columns)] for g in rep.labels]
        tables.append((f"Confusion matrix: {a.arm} (rows gold, columns predicted)", ["", *columns], rows))
    return tables


def label_markdown(rep: LabelReport) -> str:
    """The label tables as markdown, for the eval report's sections."""
    parts = [
        f"The gold answers form a closed set ({', '.join(rep.labels)}), so each answer is mapped to a label "
        f"(its extracted span, the label it starts with, or the one label it names; else '{OTHER}')."
    ]
    for title, header, rows in label_tables(rep):
        parts += [title, md_table(header, rows)]
    return "\n\n".join(parts)
