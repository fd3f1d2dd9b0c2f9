"""The verdict's speed from hand-made figures, shared by the verdict tests: paired latency ratios made
from each setup's p50 with a narrow interval, as an interleaved sample would give."""

from __future__ import annotations

from itertools import combinations

from ragtune.eval.harness.latency import RatioTest
from ragtune.eval.verdict.figures import Recommendation, VerdictFigures
from ragtune.eval.verdict.recommend import recommend as _recommend


def with_speed(figs: VerdictFigures, half: float = 0.05) -> VerdictFigures:
    """Paired latency ratios of every pair of setups from their p50s, each with a +-5% interval (about
    what a 32-question interleaved sample gives): the verdict reads speed from these, not from p50s."""
    tests = [
        RatioTest(
            metric="e2e_equal_ms", a=a.arm, b=b.arm, n=32, ratio=r, low=r * (1 - half), high=r * (1 + half), p=0.5
        )
        for a, b in combinations(figs.setups, 2)
        for r in [a.p50_ms / b.p50_ms]
    ]
    return figs.model_copy(update={"latency": tests})


def recommend(figs: VerdictFigures) -> Recommendation:
    return _recommend(with_speed(figs))
