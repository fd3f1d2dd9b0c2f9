"""From records to the statistics a report prints: intervals per arm, paired tests per pair of arms."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from typing import Any

from ragtune.eval.harness.runner import LOWER_IS_BETTER, Record
from ragtune.eval.harness.stats import PairTest, apply_holm, bootstrap_ci, compare_pair, is_binary

# Scores the per-question statistics cover, in report order; others present in records follow.
PREFERRED = ["f1", "exact_match", "contains", "extracted_match", "format", "stale", "grounding", "citation", "mrr"]


def order_metrics(names: Sequence[str]) -> list[str]:
    seen = list(dict.fromkeys(names))
    return [m for m in PREFERRED if m in seen] + sorted(m for m in seen if m not in PREFERRED)


def metric_names(records: Sequence[Record]) -> list[str]:
    return order_metrics([k for r in records for k in r.scores])


def intervals(records: Sequence[Record], resamples: int = 2000, seed: int = 0) -> dict[str, dict[str, Any]]:
    """95% bootstrap interval of every metric of every arm."""
    out: dict[str, dict[str, Any]] = {}
    names = metric_names(records)
    for arm in dict.fromkeys(r.arm for r in records):
        rs = [r for r in records if r.arm == arm]
        out[arm] = {}
        for m in names:
            vals = [r.scores[m] for r in rs if r.scores.get(m) is not None]
            if vals:
                out[arm][m] = bootstrap_ci(vals, resamples, seed).model_dump()  # type: ignore[arg-type]
    return out


def paired_values(a: Sequence[Record], b: Sequence[Record], metric: str) -> tuple[list[float], list[float]]:
    """The metric on the questions both sides scored, matched by question id."""
    bmap = {r.id: r.scores.get(metric) for r in b}
    pairs = [
        (r.scores[metric], bmap[r.id]) for r in a if r.scores.get(metric) is not None and bmap.get(r.id) is not None
    ]
    return [float(x) for x, _ in pairs], [float(y) for _, y in pairs]  # type: ignore[arg-type]


def pair_tests(
    pairs: Sequence[tuple[str, Sequence[Record], str, Sequence[Record]]],
    metrics: Sequence[str],
    resamples: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> list[PairTest]:
    """Paired tests for every (pair, metric); Holm correction within each metric's family of pairs."""
    out: list[PairTest] = []
    for m in metrics:
        family: list[PairTest] = []
        for a_name, a, b_name, b in pairs:
            x, y = paired_values(a, b, m)
            if len(x) < 2:
                continue
            family.append(compare_pair(m, a_name, x, b_name, y, is_binary(x + y), resamples, seed))
        out += apply_holm(family, higher_is_better=m not in LOWER_IS_BETTER, alpha=alpha)
    return out


def compare_arms(
    records: Sequence[Record], resamples: int = 2000, seed: int = 0, alpha: float = 0.05
) -> list[PairTest]:
    """Every pair of arms of one run (later arm first, so a positive difference means it gained)."""
    arms = list(dict.fromkeys(r.arm for r in records))
    by_arm = {a: [r for r in records if r.arm == a] for a in arms}
    pairs = [(b, by_arm[b], a, by_arm[a]) for a, b in combinations(arms, 2)]
    return pair_tests(pairs, metric_names(records), resamples, seed, alpha)


def compare_runs(
    old: Sequence[Record], new: Sequence[Record], resamples: int = 2000, seed: int = 0, alpha: float = 0.05
) -> list[PairTest]:
    """Same arm in two runs (new vs old), paired on question ids: what changed between the runs."""
    arms = [a for a in dict.fromkeys(r.arm for r in new) if any(r.arm == a for r in old)]
    pairs = [(f"{a} (new)", [r for r in new if r.arm == a], f"{a} (old)", [r for r in old if r.arm == a]) for a in arms]
    return pair_tests(pairs, metric_names([*old, *new]), resamples, seed, alpha)
