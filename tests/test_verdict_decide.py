"""How the verdict decides: fit for purpose against the trivial baselines, non-inferiority within a
margin instead of "not significant", curve trends only beyond the seed spread, and intervals whose
labels agree with the significance calls (checked on the statistics of real score vectors)."""

from __future__ import annotations

import re

import numpy as np
from verdict_speed import recommend

from ragtune.eval.verdict.figures import (
    ArmFigures,
    Comparison,
    CurvePoint,
    Estimate,
    VerdictFigures,
)
from ragtune.eval.verdict.recommend import questions_to_decide
from ragtune.eval.verdict.report import VerdictResult, comparison_verdict, render_markdown
from ragtune.eval.verdict.seeds import seeded_bootstrap


def _arm(name: str, q: float, p50: float = 1000, baseline: str | None = None, **kw) -> ArmFigures:
    return ArmFigures(
        arm=name,
        quality=Estimate(mean=q, lo=q - 0.05, hi=q + 0.05),
        p50_ms=p50,
        p95_ms=p50 * 1.3,
        baseline=baseline,
        **kw,
    )


def _cmp(a: str, b: str, diff: float, half: float, significant: bool, n: int = 64) -> Comparison:
    return Comparison(
        a=a,
        b=b,
        metric="token F1",
        diff=diff,
        lo=diff - half,
        hi=diff + half,
        p_value=0.001 if significant else 0.5,
        significant=significant,
        n=n,
        family=10,
    )


def _cited_ok(rec) -> None:
    ids = {f.id for f in rec.figures}
    for sentence in rec.sentences:
        cited = re.findall(r"\[(F\d+)\]", sentence)
        assert cited and set(cited) <= ids, sentence


def _yes_no_figures() -> VerdictFigures:
    """The issue's label set: ft 0.427 while answering "yes" every time scores 0.542."""
    return VerdictFigures(
        arms=[
            _arm("base", 0.20, 800),
            _arm("ft", 0.427, 900),
            _arm("rag", 0.30, 1500, hit_at_k=0.35),
            _arm("constant", 0.542, 0, baseline="constant", answer="yes"),
            _arm("extractive", 0.05, 40, baseline="extractive", hit_at_k=0.35),
        ],
        comparisons=[
            _cmp("ft", "constant", -0.115, 0.06, True),
            _cmp("ft", "extractive", 0.377, 0.06, True),
            _cmp("rag", "constant", -0.242, 0.06, True),
            _cmp("rag", "extractive", 0.25, 0.06, True),
            _cmp("base", "constant", -0.342, 0.06, True),
            _cmp("base", "extractive", 0.15, 0.06, True),
            _cmp("ft", "rag", 0.127, 0.06, True),
            _cmp("ft", "base", 0.227, 0.06, True),
        ],
        hit_k=3,
        curve=[
            CurvePoint(arm="ft", fraction=0.5, n_examples=50, quality=0.30, seeds=[0.29, 0.30, 0.31]),
            CurvePoint(arm="ft", fraction=1.0, n_examples=100, quality=0.427, seeds=[0.42, 0.427, 0.434]),
        ],
    )


def test_no_setup_beating_the_baselines_is_choice_none_with_what_to_try() -> None:
    rec = recommend(_yes_no_figures())
    assert rec.choice == "none"
    assert rec.sentences[0].startswith("No setup here beats the baselines")
    assert 'a constant answer ("yes", constant) at 0.542' in rec.text
    assert "rising beyond the seed spread of 0.020, so more training data would likely pay" in rec.text
    assert "Retrieval finds a gold document in the top 3 for only 35%" in rec.text
    assert "We recommend" not in rec.text
    _cited_ok(rec)
    # retrieval that finds the documents points at the generator instead
    figs = _yes_no_figures()
    figs.arms[2] = _arm("rag", 0.30, 1500, hit_at_k=0.9)
    assert "a larger model through an engine backend" in recommend(figs).text


def test_a_recommendation_cites_the_baselines_it_beats() -> None:
    figs = _yes_no_figures()
    figs.arms[1] = _arm("ft", 0.70, 900)
    figs.comparisons[0] = _cmp("ft", "constant", 0.158, 0.06, True)
    rec = recommend(figs)
    assert rec.choice == "ft"
    assert "ft significantly beats both trivial baselines" in rec.text
    labels = {f.label for f in rec.figures}
    assert {"constant token F1", "extractive token F1", "ft − constant token F1"} <= labels
    _cited_ok(rec)


def _cheap_figures(lo: float, hi: float, n: int = 64) -> VerdictFigures:
    """hybrid the most accurate; rag cheaper (faster) and behind by (lo+hi)/2, not significantly."""
    diff = (lo + hi) / 2
    return VerdictFigures(
        arms=[
            _arm("rag", 0.50 + diff, 800),
            _arm("hybrid", 0.50, 1600),
            _arm("constant", 0.05, 0, baseline="constant", answer="x"),
        ],
        comparisons=[
            Comparison(a="rag", b="hybrid", metric="token F1", diff=diff, lo=lo, hi=hi, significant=False, n=n),
            _cmp("rag", "constant", 0.4, 0.05, True),
            _cmp("hybrid", "constant", 0.45, 0.05, True),
        ],
    )


def test_a_cheaper_arm_inside_the_margin_is_recommended() -> None:
    rec = recommend(_cheap_figures(lo=-0.025, hi=0.015))
    assert rec.choice == "rag"
    assert "rag is the recommendation: it is cheaper to run" in rec.text
    assert "no worse than hybrid by more than the margin of 0.030" in rec.text and "−0.030" in rec.text
    _cited_ok(rec)
    # a stated margin replaces the default
    figs = _cheap_figures(lo=-0.025, hi=0.015).model_copy(update={"margin": 0.02})
    assert recommend(figs).choice == "hybrid"


def test_not_significant_but_beyond_the_margin_keeps_the_best_and_says_how_many_questions() -> None:
    figs = _cheap_figures(lo=-0.06, hi=0.04)  # diff -0.01, half-width 0.05 at n=64
    rec = recommend(figs)
    assert rec.choice == "hybrid"
    assert "The data cannot decide whether the cheaper rag is as good as hybrid" in rec.text
    # the half-width must shrink to |−0.01 + 0.03| = 0.02: 64 * (0.05 / 0.02)^2 = 400
    assert questions_to_decide(figs.comparisons[0], 0.03) == 400
    assert "about 400 paired questions (now 64)" in rec.text
    _cited_ok(rec)


def test_curve_trend_only_beyond_the_seed_spread() -> None:
    base = _cheap_figures(lo=-0.025, hi=0.015)

    def curve(points: list[tuple[int, float, list[float]]]) -> str:
        pts = [
            CurvePoint(arm="ft", fraction=(i + 1) / len(points), n_examples=n, quality=q, seeds=s)
            for i, (n, q, s) in enumerate(points)
        ]
        return recommend(base.model_copy(update={"curve": pts})).text

    # the curve, one training run per point: no trend is read
    one_run = curve([(25, 0.110, []), (50, 0.531, []), (100, 0.500, [])])
    assert "falling" not in one_run and "no trend is read" in one_run
    # the same step measured with seeds spread wider than it: within the spread
    within = curve([(50, 0.531, [0.48, 0.531, 0.58]), (100, 0.500, [0.45, 0.50, 0.55])])
    assert "within the seed spread of 0.100" in within and "falling" not in within
    # a drop larger than the spread is a trend
    beyond = curve([(50, 0.531, [0.52, 0.531, 0.54]), (100, 0.40, [0.39, 0.40, 0.41])])
    assert "falling beyond the seed spread of 0.020" in beyond


def test_interval_labels_agree_with_significance() -> None:
    rng = np.random.default_rng(0)
    n, m = 48, 6
    base = rng.uniform(0, 1, n)
    family = [base + rng.normal(shift, 0.3, n) for shift in (0.0, 0.03, 0.08, 0.12, 0.2, 0.4)]
    level = 1 - 0.05 / m
    for x in family:  # percentile interval and bootstrap p from the same resamples agree
        diff, lo, hi, p = seeded_bootstrap(x[None, :], base[None, :], 2000, 0, level)
        assert (lo > 0 or hi < 0) == (p * m < 0.05)
    # a table row whose interval excludes 0 beside "no significant difference" carries an explanation
    odd = Comparison(
        a="a", b="b", metric="token F1", diff=0.1, lo=0.02, hi=0.2, p_value=0.08, significant=False, family=6
    )
    odd.test = "exact McNemar"
    assert "does not reject although the bootstrap interval excludes 0" in comparison_verdict(odd)
    plain = odd.model_copy(update={"lo": -0.02})
    assert comparison_verdict(plain) == "no significant difference"
    figs = _cheap_figures(lo=-0.025, hi=0.015)
    figs.comparisons = [c.model_copy(update={"family": 3}) for c in figs.comparisons]
    md = render_markdown(VerdictResult(figures=figs, recommendation=recommend(figs)))
    assert "simultaneous 95% CI (Bonferroni over 3 pairs)" in md


def test_seeds_widen_the_interval_of_a_seed_dependent_difference() -> None:
    rng = np.random.default_rng(1)
    q = rng.uniform(0, 1, 64)
    ft = np.stack([q + off for off in (-0.08, 0.0, 0.08)])  # three seeds, the same questions, shifted
    other = q[None, :] - 0.02
    _, lo1, hi1, _ = seeded_bootstrap(ft[1:2], other)
    _, lo3, hi3, _ = seeded_bootstrap(ft, other)
    assert hi3 - lo3 > 2 * (hi1 - lo1)
