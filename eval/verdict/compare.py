"""From the verdict's records to its figures: per-arm estimates and the paired comparisons.

Every pair of arms, baselines included, is one Holm family on the primary metric. Beside each Holm
p the report prints the *simultaneous* interval of the difference (Bonferroni: each pair at level
1 - alpha/m for m pairs), so an interval that excludes 0 comes with a corrected test that rejects
(bootstrap p and percentile interval come from the same resamples); where the exact McNemar test
decides instead, the report labels any disagreement.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ragtune.eval.harness import stats
from ragtune.eval.harness.arms import ArmSpec
from ragtune.eval.harness.runner import Record, summarize
from ragtune.eval.verdict.figures import ArmFigures, Comparison, Estimate
from ragtune.eval.verdict.seeds import base_arm, seed_names, seeded_bootstrap, seeded_interval


def main_arms(records: Sequence[Record]) -> list[str]:
    """Arm names with the extra seeds folded in, in run order."""
    return list(dict.fromkeys(base_arm(r.arm) for r in records))


def score_matrix(records: Sequence[Record], arm: str, ids: Sequence[str] | None = None) -> tuple[list[str], np.ndarray]:
    """(question ids, seeds x questions token F1) of `arm`, on the questions every seed answered."""
    names = seed_names([r.arm for r in records], arm)
    by_name = {n: {r.id: r.f1 for r in records if r.arm == n} for n in names}
    common = set.intersection(*(set(v) for v in by_name.values())) if by_name else set()
    order = [i for i in dict.fromkeys(r.id for r in records if r.arm in by_name) if i in common]
    if ids is not None:
        order = [i for i in ids if i in common]
    return order, np.asarray([[by_name[n][i] for i in order] for n in names], dtype=float).reshape(len(names), -1)


def _estimate(values: Sequence[float | None], seed: int) -> Estimate | None:
    iv = stats.bootstrap_ci([v for v in values if v is not None], seed=seed)
    if iv.mean is None:
        return None
    return Estimate(mean=iv.mean, lo=iv.low, hi=iv.high)


def _quality(matrix: np.ndarray, seed: int, resamples: int) -> Estimate:
    if matrix.shape[0] > 1:
        mean, lo, hi = seeded_interval(matrix, resamples, seed)
        return Estimate(mean=mean, lo=lo, hi=hi)
    est = _estimate(list(matrix[0]), seed)
    return est if est is not None else Estimate(mean=0.0)


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def arm_figures(
    records: Sequence[Record],
    specs: Mapping[str, ArmSpec],
    seed: int,
    resamples: int = 2000,
    latency: dict[str, dict[str, Any]] | None = None,
) -> list[ArmFigures]:
    """One entry per arm (extra seeds folded into their arm); latency from the interleaved sample
    (`latency`, per arm) where given, else from the first seed's records."""
    summary = summarize(records, latency)
    out: list[ArmFigures] = []
    for name in main_arms(records):
        s = summary[name]
        rs = [r for r in records if r.arm == name]
        every_seed = [r for r in records if base_arm(r.arm) == name]
        lat = [r for r in rs if not r.batched] or rs
        gen_ms = sum(max(r.total_ms - r.retrieve_ms, 1e-6) for r in lat)
        _, matrix = score_matrix(records, name)
        spec = specs.get(name)
        out.append(
            ArmFigures(
                arm=name,
                quality=_quality(matrix, seed, resamples),
                format=_estimate([r.format_ok for r in every_seed], seed),
                p50_ms=float(s["p50_ms"] or 0.0),
                p95_ms=s["p95_ms"],
                latency_n=s.get("latency_n"),
                tokens_per_s=1000 * sum(r.completion_tokens for r in lat) / gen_ms
                if spec and not spec.baseline
                else None,
                prompt_tokens=s["prompt_tokens"],
                baseline=spec.baseline if spec else None,
                answer=spec.constant if spec else None,
                hit_at_k=_mean([r.hit for r in rs]),
                seeds=[float(row.mean()) for row in matrix] if matrix.shape[0] > 1 else [],
            )
        )
    return out


def _pair(a: str, xa: np.ndarray, b: str, xb: np.ndarray, level: float, seed: int, resamples: int) -> stats.PairTest:
    """One paired test; single-seed sides keep the harness's tests (McNemar for 0/1 scores)."""
    if xa.shape[0] == 1 and xb.shape[0] == 1:
        diff, lo, hi, p = stats.paired_bootstrap(xa[0], xb[0], resamples, seed, level)
        test = "paired bootstrap"
        if stats.is_binary([*xa[0], *xb[0]]):
            p, _, _ = stats.mcnemar_exact(xa[0], xb[0])
            test = "exact McNemar"
    else:
        diff, lo, hi, p = seeded_bootstrap(xa, xb, resamples, seed, level)
        test = "bootstrap over questions and seeds"
    return stats.PairTest(
        metric="f1",
        a=a,
        b=b,
        n=xa.shape[1],
        mean_a=float(xa.mean()),
        mean_b=float(xb.mean()),
        diff=diff,
        low=lo,
        high=hi,
        test=test,
        p=p,
    )


def comparisons(
    records: Sequence[Record], metric: str, seed: int, alpha: float, resamples: int = 2000
) -> list[Comparison]:
    """Every pair of arms on the same questions: Holm-adjusted p and simultaneous (Bonferroni) intervals."""
    arms = main_arms(records)
    pairs = list(itertools.combinations(arms, 2))
    if not pairs:
        return []
    level = 1 - alpha / len(pairs)
    tests = []
    for a, b in pairs:
        ids_a, _ = score_matrix(records, a)
        ids, xb = score_matrix(records, b, ids_a)
        _, xa = score_matrix(records, a, ids)
        tests.append(_pair(a, xa, b, xb, level, seed, resamples))
    stats.apply_holm(tests, alpha=alpha)
    return [
        Comparison(
            a=t.a,
            b=t.b,
            metric=metric,
            diff=t.diff or 0.0,
            lo=t.low,
            hi=t.high,
            p_value=t.p_holm,
            significant=t.significant,
            n=t.n,
            family=len(pairs),
            test=t.test,
        )
        for t in tests
    ]
