"""Latency measurement: interleaved paired runs, honest percentiles, engine figures, paired ratio tests.

The statistics are checked on synthetic latencies with known properties (calibration: an A/A comparison
is a draw at about the nominal rate, a 1.5x difference is found); one model-backed A/A run shows the
machinery end to end. No assert depends on how fast this machine is.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from ragtune.cli.eval import latency_option
from ragtune.core.config import load_config
from ragtune.core.errors import ConfigError
from ragtune.core.types import Answer, Timings, Usage
from ragtune.eval.harness.arms import ArmSpec
from ragtune.eval.harness.compare import compare_reports
from ragtune.eval.harness.data import EvalItem
from ragtune.eval.harness.latency import (
    LatencySample,
    common_length,
    compare_latency,
    latency_items,
    percentile,
    run_latency,
    sample_of,
    summarize_latency,
)
from ragtune.eval.harness.manifest import manifest
from ragtune.eval.harness.report import ReportExtras, write_report
from ragtune.eval.harness.runner import Record, summarize
from ragtune.eval.harness.schema import REPORT_SCHEMA

ARMS = [ArmSpec(name=n, mode="base") for n in ("a", "b", "c")]
ITEMS = [EvalItem(id=f"q{i}", question=f"question {i}?", answers=["x"]) for i in range(12)]


def sample(arm: str, i: int, ttft: float, tpot: float, out: int = 10) -> LatencySample:
    e2e = ttft + tpot * (out - 1)
    return LatencySample(
        id=f"q{i}",
        arm=arm,
        slot=0,
        e2e_ms=e2e,
        ttft_ms=ttft,
        tpot_ms=tpot,
        retrieve_ms=0.0,
        prompt_tokens=50,
        output_tokens=out,
    )


def paired_lognormal(rng: np.random.Generator, n: int, factor: float) -> list[LatencySample]:
    """Per-question difficulty shared by both arms, independent noise per request; b = factor x a."""
    base = rng.lognormal(np.log(800), 0.5, n)
    a = base * rng.lognormal(0, 0.2, n)
    b = factor * base * rng.lognormal(0, 0.2, n)
    return [sample("a", i, float(x), 0.0) for i, x in enumerate(a)] + [
        sample("b", i, float(y), 0.0) for i, y in enumerate(b)
    ]


# percentiles ----------------------------------------------------------------------------------------


def test_percentiles_only_where_the_sample_supports_them():
    four = [100.0, 200.0, 300.0, 400.0]
    assert percentile(four, 50) == pytest.approx(250.0)
    assert percentile(four, 95) is None and percentile(four, 99) is None  # would only be the maximum
    twenty = [float(v) for v in range(1, 21)]
    assert percentile(twenty, 95) == pytest.approx(np.percentile(twenty, 95)) and percentile(twenty, 99) is None
    hundred = [float(v) for v in range(100)]
    assert percentile(hundred, 99) == pytest.approx(98.01)
    assert percentile([], 50) is None


# engine figures from an answer's timings ------------------------------------------------------------


def test_ttft_tpot_from_answer_timings():
    # generator: first token 200 ms into a 800 ms generation of 13 tokens; the request took 1000 ms
    ans = Answer(
        answer="x",
        mode="rag",
        timings=Timings(retrieve_ms=150, ttft_ms=200, generate_ms=800, total_ms=1000),
        usage=Usage(prompt_tokens=300, completion_tokens=13),
    )
    s = sample_of(ans, "q1", "rag", 2)
    assert s.ttft_ms == pytest.approx(400.0)  # retrieval, prompt and prefill: all before the first token
    assert s.tpot_ms == pytest.approx(600 / 12) and s.e2e_ms == 1000 and s.retrieve_ms == 150
    assert s.equal_length_ms(13) == pytest.approx(1000.0) and s.equal_length_ms(5) == pytest.approx(600.0)
    one = Answer(answer="", mode="base", timings=Timings(ttft_ms=90, generate_ms=90, total_ms=100))
    assert sample_of(one, "q", "base", 0).tpot_ms == 0.0  # no token after the first: no TPOT


def test_equal_length_removes_the_advantage_of_shorter_answers():
    """Arms with the same TTFT and TPOT, one writing 10 tokens and one 40: the end-to-end ratio shows a
    difference, the equal-length ratio is a draw."""
    rng = np.random.default_rng(3)
    samples = []
    for i in range(32):
        ttft, tpot = 300 * rng.lognormal(0, 0.1), 50 * rng.lognormal(0, 0.1)
        samples += [sample("short", i, ttft, tpot * rng.lognormal(0, 0.05), 10), sample("long", i, ttft, tpot, 40)]
    assert common_length(samples) == 25
    (e2e,) = compare_latency(samples, "e2e_ms", resamples=1000)
    (equal,) = compare_latency(samples, "e2e_equal_ms", resamples=1000)
    assert (e2e.a, e2e.faster) == ("long", "short") and e2e.low > 2  # (300 + 39*50) / (300 + 9*50) = 3
    assert equal.draw() and not equal.significant and equal.verdict == "no significant difference"


# interleaved paired runs ----------------------------------------------------------------------------


class Drifting:
    """A fake backend whose every arm takes the same time, growing with each call (machine drift)."""

    name = "drifting"

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def current_snapshot(self) -> str | None:
        return None

    def answer(self, questions: Sequence[str], arm: ArmSpec, snapshot: str | None) -> list[Answer]:
        self.calls.append((arm.name, questions[0]))
        ms = 500.0 + 10.0 * len(self.calls)
        t = Timings(ttft_ms=ms / 2, generate_ms=ms, total_ms=ms)
        return [Answer(answer="x", mode=arm.mode, timings=t, usage=Usage(prompt_tokens=5, completion_tokens=11))]


def test_interleaved_run_warms_up_shuffles_and_pairs():
    backend = Drifting()
    samples = run_latency(backend, ITEMS, [*ARMS, ArmSpec(name="k", mode="base", baseline="constant")], seed=7)
    # warm-up: each generating arm once on the first question, not counted; the baseline is not timed
    assert backend.calls[:3] == [("a", "question 0?"), ("b", "question 0?"), ("c", "question 0?")]
    assert len(backend.calls) == 3 + 3 * len(ITEMS) and len(samples) == 3 * len(ITEMS)
    per_q = [backend.calls[3 + 3 * i : 6 + 3 * i] for i in range(len(ITEMS))]
    assert all({q for _, q in block} == {ITEMS[i].question} for i, block in enumerate(per_q))  # back to back
    orders = {tuple(a for a, _ in block) for block in per_q}
    assert len(orders) > 1  # the arm order is shuffled per question ...
    assert [s.model_dump() for s in run_latency(Drifting(), ITEMS, ARMS, seed=7)] == [
        s.model_dump() for s in samples
    ]  # ... reproducibly (seeded)
    assert {s.slot for s in samples} == {0, 1, 2}
    assert [s.arm for s in samples] == ["a"] * 12 + ["b"] * 12 + ["c"] * 12  # the given arm order
    assert [s.id for s in samples[:12]] == [it.id for it in ITEMS]


def test_interleaving_keeps_drift_out_of_the_comparison():
    """The same arm three times under steady drift: interleaved, every pair is a draw; arm after arm
    (the old way) the later arm looks slower."""
    samples = run_latency(Drifting(), ITEMS * 3, ARMS, seed=1)  # 36 questions
    samples = [s.model_copy(update={"id": f"{s.id}-{(n % 36) // 12}"}) for n, s in enumerate(samples)]
    tests = compare_latency(samples, resamples=1000)
    assert len(tests) == 3 and all(not t.significant for t in tests)
    drifted = Drifting()
    sequential = [run_latency(drifted, ITEMS * 3, [arm], seed=1) for arm in ARMS[:2]]
    seq = [s.model_copy(update={"id": f"q{n}"}) for part in sequential for n, s in enumerate(part)]
    (t,) = compare_latency(seq, resamples=1000)
    assert t.a == "b" and t.faster == "a" and t.low > 1


def test_latency_items_seeded_sample_and_all():
    assert latency_items(ITEMS, None, 0) == ITEMS and latency_items(ITEMS, 50, 0) == ITEMS
    five = latency_items(ITEMS, 5, 0)
    assert len(five) == 5 and five == latency_items(ITEMS, 5, 0) and five == [it for it in ITEMS if it in five]
    assert latency_option("all") == "all" and latency_option("16") == 16
    with pytest.raises(ConfigError, match="--latency"):
        latency_option("many")


# calibration of the paired ratio test ---------------------------------------------------------------


def test_a_a_comparison_is_a_draw_at_about_the_nominal_rate():
    rng = np.random.default_rng(2026)
    runs = [compare_latency(paired_lognormal(rng, 32, 1.0), resamples=500, seed=k)[0] for k in range(300)]
    false_positive = np.mean([t.p < 0.05 for t in runs])
    covers = np.mean([t.draw() for t in runs])
    assert 0.01 <= false_positive <= 0.10  # nominal 0.05; 300 runs give a standard error of 0.013
    assert covers >= 0.90  # the 95% interval contains the true ratio 1
    assert np.mean([t.significant for t in runs]) <= 0.10


def test_a_known_one_and_a_half_times_difference_is_detected():
    rng = np.random.default_rng(11)
    runs = [compare_latency(paired_lognormal(rng, 32, 1.5), resamples=500, seed=k)[0] for k in range(100)]
    assert np.mean([t.significant and t.faster == "a" for t in runs]) >= 0.9
    assert np.mean([t.low <= 1.5 <= t.high for t in runs]) >= 0.85  # the interval covers the truth
    assert all(t.a == "b" and t.ratio > 1 for t in runs)


def test_holm_over_the_pairs_of_arms():
    rng = np.random.default_rng(5)
    two = paired_lognormal(rng, 40, 1.5)
    third = [s.model_copy(update={"arm": "c", "ttft_ms": s.ttft_ms * 1.01}) for s in two if s.arm == "a"]
    tests = {(t.a, t.b): t for t in compare_latency(two + third, resamples=500)}
    assert set(tests) == {("b", "a"), ("c", "a"), ("c", "b")}
    assert all(t.p_holm >= t.p for t in tests.values())
    assert tests[("b", "a")].faster == "a" and tests[("c", "b")].faster == "c"
    assert tests[("c", "a")].ratio == pytest.approx(1.01) and tests[("b", "a")].flipped().ratio < 1


# reports --------------------------------------------------------------------------------------------


def _record(arm: str, i: int) -> Record:
    return Record(
        id=f"q{i}", arm=arm, mode="base", question="q?", answer="x", extracted="x", golds=["x"],
        exact_match=1.0, f1=1.0, contains=1.0, format_ok=None, scores={"f1": 1.0}, batched=True,
    )  # fmt: skip


def _write(out: Path, factor: float, n: int = 24) -> Path:
    samples = paired_lognormal(np.random.default_rng(int(factor * 10)), n, factor)
    records = [_record(a, i) for a in ("a", "b") for i in range(n)]
    summary = summarize(records, summarize_latency(samples))
    meta = manifest(load_config(workspace=out / "ws", environ={}), {"bootstrap_resamples": 500})
    path, _ = write_report(out, summary, records, meta, extras=ReportExtras(latency=samples))
    return path


def test_report_and_compare_carry_n_percentiles_and_ratios(tmp_path: Path, monkeypatch):
    path = _write(tmp_path / "one", 1.5)
    doc = json.loads(path.read_text())
    jsonschema.validate(doc, REPORT_SCHEMA)
    s = doc["summary"]["b"]
    assert s["latency_n"] == 24 and s["p95_ms"] is not None and s["p99_ms"] is None
    (t,) = doc["latency"]["comparisons"]
    assert (t["a"], t["b"], t["faster"], t["n"]) == ("b", "a", "a", 24) and t["low"] > 1
    md = (tmp_path / "one" / "report.md").read_text()
    assert "n/a (n=24)" in md and "| e2e_equal_ms | b / a | 24 |" in md and "a faster" in md
    assert "Wilcoxon signed-rank on log ratios" in md
    small = _write(tmp_path / "two", 1.0, n=6)
    assert "n/a (n=6)" in (tmp_path / "two" / "report.md").read_text()
    _, cmp_md = compare_reports(small, path, resamples=500)
    assert "## Latency" in cmp_md and "| e2e_equal_ms | b / a | 24 |" in cmp_md
    assert "| e2e_equal_ms | a (new) / a (old) | 6 |" in cmp_md  # the questions both runs timed

    from ragtune.cli import main

    monkeypatch.setattr(sys, "argv", ["ragtune", "eval", "compare", str(small), str(path)])
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code in (0, None)


# end to end with the real model ---------------------------------------------------------------------


def test_model_backed_a_a_run(pipeline_factory):
    """The same arm twice on a few questions, interleaved: identical answers and lengths, a finite
    interval around the ratio, and no difference (Wilcoxon on 4 pairs cannot reach p < 0.125)."""
    from ragtune.eval.harness.backends import InProcessBackend

    p = pipeline_factory()
    arms = [ArmSpec(name=n, mode="base", max_new_tokens=6) for n in ("base-1", "base-2")]
    samples = run_latency(InProcessBackend(p), ITEMS[:4], arms, seed=0)
    assert len(samples) == 8 and all(s.e2e_ms > 0 and s.ttft_ms <= s.e2e_ms for s in samples)
    by = {(s.arm, s.id): s for s in samples}
    assert all(by[("base-1", f"q{i}")].output_tokens == by[("base-2", f"q{i}")].output_tokens for i in range(4))
    (t,) = compare_latency(samples, resamples=500)
    assert t.n == 4 and 0 < t.low <= t.ratio <= t.high and not t.significant and t.p >= 0.125
    assert summarize_latency(samples)["base-1"]["p95_ms"] is None
