"""Metrics against hand-computed values; bootstrap, McNemar and Holm against scipy and known tables."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from ragtune.eval.harness import metrics
from ragtune.eval.harness.stats import apply_holm, bootstrap_ci, compare_pair, holm, mcnemar_exact, paired_bootstrap


def test_squad_em_f1_by_hand():
    assert metrics.exact_match("The Eiffel Tower!", ["eiffel tower"]) == 1.0
    # pred: "paris in france" -> [paris, in, france]; gold "paris" -> common 1, P=1/3, R=1 -> F1 = 0.5
    assert metrics.token_f1("Paris, in France.", ["Paris"]) == pytest.approx(0.5)
    # best over golds: second gold matches exactly
    assert metrics.token_f1("in 1863", ["1862", "1863"]) == pytest.approx(2 * (1 / 2 * 1) / (1 / 2 + 1))
    assert metrics.token_f1("", [""]) == 1.0


def test_extracted_match_for_labels():
    rx = r"^(yes|no|maybe)\b"
    assert metrics.extracted_match("Yes, he was.", ["yes"], rx) == 1.0
    assert metrics.extracted_match("No.", ["yes"], rx) == 0.0
    assert metrics.extracted_match("Perhaps so", ["yes"], rx) == 0.0
    assert metrics.extracted_match("Yes", ["yes"], None) is None


def test_format_regex_and_json_schema():
    schema = {"type": "object", "required": ["answer"], "properties": {"answer": {"type": "string"}}}
    assert metrics.format_ok('{"answer": "17 florins"}', None, schema) == 1.0
    assert metrics.format_ok('{"answer": 17}', None, schema) == 0.0
    assert metrics.format_ok("not json", None, schema) == 0.0
    assert metrics.format_ok("One line.\nSources: Doc", r"^[^\n]+\nSources: .+$") == 1.0


def test_retrieval_metrics_by_hand():
    ranked, gold = ["d3", "d1", "d7", "d2"], ["d1", "d2"]
    assert metrics.hit_at_k(ranked, gold, 1) == 0.0
    assert metrics.hit_at_k(ranked, gold, 2) == 1.0
    assert metrics.recall_at_k(ranked, gold, 2) == 0.5
    assert metrics.recall_at_k(ranked, gold, 4) == 1.0
    assert metrics.mrr(ranked, gold) == 0.5
    assert metrics.mrr(["x"], gold) == 0.0
    # DCG@4 = 1/log2(3) + 1/log2(5); ideal = 1 + 1/log2(3)
    want = (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    assert metrics.ndcg_at_k(ranked, gold, 4) == pytest.approx(want)
    assert metrics.ndcg_at_k(["d1"], ["d1"], 10) == 1.0
    assert metrics.mrr(ranked, []) is None


def test_grounding_and_citations_by_hand():
    ctx = ["The Basic plan costs 17 florins a month."]
    # content tokens of the answer: basic, plan, costs, 17, florins, weekly -> 5 of 6 supported
    assert metrics.grounding("The Basic plan costs 17 florins weekly.", ctx) == pytest.approx(5 / 6)
    assert metrics.grounding("Yes.", ctx) is None
    assert metrics.grounding("17 florins", []) is None
    assert metrics.citation_correct(["a", "b", "c"], ["a", "c"]) == pytest.approx(2 / 3)
    assert metrics.citation_correct([], ["a"]) is None


def test_mcnemar_matches_scipy_binomtest():
    rng = np.random.default_rng(3)
    for _ in range(5):
        a = rng.integers(0, 2, 60).astype(float)
        b = rng.integers(0, 2, 60).astype(float)
        p, n10, n01 = mcnemar_exact(a, b)
        assert n10 == int(np.sum((a == 1) & (b == 0))) and n01 == int(np.sum((a == 0) & (b == 1)))
        assert p == pytest.approx(sps.binomtest(n10, n10 + n01, 0.5).pvalue)
    # textbook case: 10 discordant pairs, all one way -> p = 2 * 0.5**10
    assert mcnemar_exact([1.0] * 10 + [0.0] * 5, [0.0] * 10 + [0.0] * 5)[0] == pytest.approx(2 * 0.5**10)
    assert mcnemar_exact([1.0, 0.0], [1.0, 0.0])[0] == 1.0


def test_holm_known_values():
    # m=4: sorted 0.01,0.02,0.03,0.04 -> 0.04, 0.06, 0.06 (monotone), 0.06 ... capped and in input order
    assert holm([0.03, 0.01, 0.04, 0.02]) == pytest.approx([0.06, 0.04, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_bootstrap_ci_matches_scipy_and_normal_theory():
    x = np.random.default_rng(0).normal(0.6, 0.2, 400)
    iv = bootstrap_ci(list(x), 2000, seed=1)
    ref = sps.bootstrap((x,), np.mean, n_resamples=2000, method="percentile", rng=np.random.default_rng(1))
    assert iv.low == pytest.approx(ref.confidence_interval.low) and iv.high == pytest.approx(
        ref.confidence_interval.high
    )
    se = x.std(ddof=1) / math.sqrt(len(x))
    assert iv.low == pytest.approx(x.mean() - 1.96 * se, abs=0.01) and iv.high == pytest.approx(
        x.mean() + 1.96 * se, abs=0.01
    )
    const = bootstrap_ci([1.0, 1.0, 1.0])
    assert (const.mean, const.low, const.high) == (1.0, 1.0, 1.0)


def test_paired_bootstrap_and_winner_only_when_significant():
    rng = np.random.default_rng(0)
    base = rng.normal(0.4, 0.1, 200)
    better = base + 0.05 + rng.normal(0, 0.02, 200)
    diff, low, high, p = paired_bootstrap(better, base, 2000, 0)
    assert diff == pytest.approx(float(np.mean(better - base))) and low < diff < high and low > 0 and p < 0.01
    same = base + rng.normal(0, 0.02, 200)
    tests = apply_holm(
        [
            compare_pair("f1", "b", list(better), "a", list(base), False),
            compare_pair("f1", "c", list(same), "a", list(base), False),
        ]
    )
    assert tests[0].significant and tests[0].winner == "b" and "b better" in tests[0].verdict
    assert (
        not tests[1].significant
        and tests[1].winner is None
        and tests[1].verdict.startswith("no significant difference")
    )
    assert tests[1].p_holm >= tests[1].p
