"""Confidence intervals and paired tests between arms.

- every metric of every arm: 95% percentile-bootstrap interval of the mean (scipy.stats.bootstrap);
- every pair of arms, on the questions both answered: paired bootstrap interval of the mean
  difference and a two-sided bootstrap p-value; for binary metrics the exact McNemar test instead;
- Holm's step-down correction over all pairs of one metric, so "significant" keeps a 5% family-wise
  error rate however many arms there are.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel
from scipy import stats as sps

ALPHA = 0.05


class Interval(BaseModel):
    mean: float | None
    low: float | None
    high: float | None
    n: int


class PairTest(BaseModel):
    metric: str
    a: str
    b: str
    n: int
    mean_a: float | None
    mean_b: float | None
    diff: float | None
    low: float | None
    high: float | None
    test: str
    p: float
    p_holm: float = 1.0
    significant: bool = False
    winner: str | None = None
    verdict: str = ""
    discordant: tuple[int, int] | None = None


def bootstrap_ci(values: Sequence[float], n_resamples: int = 2000, seed: int = 0, level: float = 0.95) -> Interval:
    """Percentile bootstrap of the mean; a constant sample gets a zero-width interval."""
    x = np.asarray([v for v in values if v is not None], dtype=float)
    if len(x) == 0:
        return Interval(mean=None, low=None, high=None, n=0)
    mean = float(x.mean())
    if len(x) == 1 or np.all(x == x[0]):
        return Interval(mean=mean, low=mean, high=mean, n=len(x))
    res = sps.bootstrap(
        (x,),
        np.mean,
        n_resamples=n_resamples,
        confidence_level=level,
        method="percentile",
        rng=np.random.default_rng(seed),
        vectorized=True,
    )
    return Interval(
        mean=mean, low=float(res.confidence_interval.low), high=float(res.confidence_interval.high), n=len(x)
    )


def paired_bootstrap(
    a: Sequence[float], b: Sequence[float], n_resamples: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float, float]:
    """(mean diff a-b, CI low, CI high, two-sided p) from resampling questions, keeping pairs together.

    p = twice the smaller share of resampled differences on either side of zero (at least 1/(B+1)).
    """
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if len(d) == 0:
        return 0.0, 0.0, 0.0, 1.0
    mean = float(d.mean())
    if np.all(d == d[0]):
        return mean, mean, mean, 1.0 if mean == 0 else 0.0
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(d), size=(n_resamples, len(d)))
    boots = d[idx].mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(boots, [tail, 1 - tail])
    p = 2 * min(float(np.mean(boots <= 0)), float(np.mean(boots >= 0)))
    return mean, float(low), float(high), float(min(1.0, max(p, 1 / (n_resamples + 1))))


def mcnemar_exact(a: Sequence[float], b: Sequence[float]) -> tuple[float, int, int]:
    """Exact (binomial) McNemar test on paired 0/1 outcomes: (p, a-only wins, b-only wins)."""
    aa = np.asarray(a, dtype=float) > 0.5
    bb = np.asarray(b, dtype=float) > 0.5
    n10 = int(np.sum(aa & ~bb))
    n01 = int(np.sum(~aa & bb))
    if n10 + n01 == 0:
        return 1.0, n10, n01
    p = min(1.0, 2 * float(sps.binom.cdf(min(n10, n01), n10 + n01, 0.5)))
    return p, n10, n01


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (monotone, capped at 1), in the input order."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def is_binary(values: Sequence[float]) -> bool:
    return all(v in (0.0, 1.0) for v in values)


def compare_pair(
    metric: str,
    a_name: str,
    a: Sequence[float],
    b_name: str,
    b: Sequence[float],
    binary: bool,
    n_resamples: int = 2000,
    seed: int = 0,
) -> PairTest:
    """One metric, two arms, the same questions in the same order."""
    diff, low, high, p_boot = paired_bootstrap(a, b, n_resamples, seed)
    test, disc = "paired bootstrap", None
    p = p_boot
    if binary:
        p, n10, n01 = mcnemar_exact(a, b)
        test, disc = "exact McNemar", (n10, n01)
    return PairTest(
        metric=metric,
        a=a_name,
        b=b_name,
        n=len(a),
        mean_a=float(np.mean(a)) if len(a) else None,
        mean_b=float(np.mean(b)) if len(b) else None,
        diff=diff,
        low=low,
        high=high,
        test=test,
        p=p,
        discordant=disc,
    )


def apply_holm(tests: list[PairTest], higher_is_better: bool = True, alpha: float = ALPHA) -> list[PairTest]:
    """Adjust the p-values of one metric's family of tests and call winners only where significant."""
    for t, padj in zip(tests, holm([t.p for t in tests]), strict=True):
        t.p_holm = padj
        t.significant = padj < alpha and (t.diff or 0.0) != 0.0
        if t.significant:
            a_better = (t.diff or 0.0) > 0 if higher_is_better else (t.diff or 0.0) < 0
            t.winner = t.a if a_better else t.b
            t.verdict = f"{t.winner} better (p_holm={padj:.3g})"
        else:
            t.verdict = f"no significant difference (p_holm={padj:.3g})"
    return tests
