"""The verdict: its recommendation follows the numbers, its learning-curve subsets are nested, and its
page renders (the HTML opens in headless Chromium with no console error; a screenshot stays in tmp)."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
from verdict_speed import recommend, with_speed

from ragtune.eval.harness.latency import RatioTest
from ragtune.eval.harness.load import LoadLevel
from ragtune.eval.verdict.learning_curve import nested_subsets
from ragtune.eval.verdict.recommend import (
    ArmFigures,
    Comparison,
    CurvePoint,
    Estimate,
    UpdateCost,
    VerdictFigures,
)
from ragtune.eval.verdict.recommend import recommend as _recommend
from ragtune.eval.verdict.report import VerdictResult, write_verdict


def _arm(name: str, q: float, fmt: float, p50: float) -> ArmFigures:
    return ArmFigures(
        arm=name,
        quality=Estimate(mean=q, lo=q - 0.05, hi=q + 0.05),
        format=Estimate(mean=fmt, lo=max(0, fmt - 0.1), hi=min(1, fmt + 0.1)),
        p50_ms=p50,
        p95_ms=p50 * 1.3,
    )


def _figs(hybrid_q: float, rag_q: float, significant: bool, rag_fmt: float = 0.1, half: float = 0.04) -> VerdictFigures:
    """hybrid, rag, ft and base; `half` is the half-width of the hybrid − rag interval."""
    diff = hybrid_q - rag_q
    return VerdictFigures(
        arms=[
            _arm("base", 0.05, 0.0, 800),
            _arm("ft", 0.10, 0.9, 900),
            _arm("rag", rag_q, rag_fmt, 1500),
            _arm("hybrid", hybrid_q, 0.95, 1700),
        ],
        comparisons=[
            Comparison(
                a="hybrid",
                b="rag",
                metric="token F1",
                diff=diff,
                lo=diff - half,
                hi=diff + half,
                p_value=0.001 if significant else 0.4,
                significant=significant,
            ),
            Comparison(a="hybrid", b="ft", metric="token F1", diff=hybrid_q - 0.10, p_value=0.001, significant=True),
            Comparison(a="rag", b="ft", metric="token F1", diff=rag_q - 0.10, p_value=0.001, significant=True),
            Comparison(a="hybrid", b="base", metric="token F1", diff=hybrid_q - 0.05, p_value=0.001, significant=True),
            Comparison(a="rag", b="base", metric="token F1", diff=rag_q - 0.05, p_value=0.001, significant=True),
        ],
        update=[
            UpdateCost(arm="hybrid", method="ingest", seconds=0.8, changed_correct=0.7, n_changed=20),
            UpdateCost(arm="ft", method="retune", seconds=95.0, changed_correct=0.1, n_changed=20),
        ],
        curve=[
            CurvePoint(arm="hybrid", fraction=0.5, n_examples=100, quality=0.40, seeds=[0.38, 0.40, 0.42]),
            CurvePoint(arm="hybrid", fraction=1.0, n_examples=200, quality=0.48, seeds=[0.47, 0.48, 0.49]),
        ],
    )


def _cited_ok(rec) -> None:
    ids = {f.id for f in rec.figures}
    for sentence in rec.sentences:
        cited = re.findall(r"\[(F\d+)\]", sentence)
        assert cited, f"sentence cites no figure: {sentence}"
        assert set(cited) <= ids


def test_recommendation_follows_the_winner() -> None:
    hybrid_wins = recommend(_figs(hybrid_q=0.55, rag_q=0.35, significant=True))
    rag_wins = recommend(_figs(hybrid_q=0.35, rag_q=0.55, significant=True))
    assert hybrid_wins.choice == "hybrid"
    assert rag_wins.choice == "rag"
    assert hybrid_wins.text != rag_wins.text
    assert "significantly ahead of rag" in hybrid_wins.text
    assert "significantly ahead of hybrid" in rag_wins.text
    _cited_ok(hybrid_wins)
    _cited_ok(rag_wins)


def test_figures_carry_the_numbers_they_cite() -> None:
    rec = recommend(_figs(hybrid_q=0.55, rag_q=0.35, significant=True))
    values = {f.label: f.value for f in rec.figures}
    assert values["hybrid token F1"].startswith("0.550")
    assert values["hybrid update: re-ingest time"] == "0.8 s"
    assert "119x longer" in rec.text  # 95 s / 0.8 s
    assert "still rising beyond the seed spread of 0.040" in rec.text  # 0.40 -> 0.48, seeds spread 0.04
    # of two arms sharing one re-index, the sentence names the one that got more changed facts right
    figs = _figs(hybrid_q=0.55, rag_q=0.35, significant=True)
    figs.update.insert(0, UpdateCost(arm="rag", method="ingest", seconds=0.8, changed_correct=0.4, n_changed=20))
    assert "reaches hybrid in 0.8 s" in recommend(figs).text


def test_a_cheaper_arm_wins_only_when_shown_no_worse_than_the_margin() -> None:
    # rag as format-adherent as hybrid and faster, its difference inside the margin: rag
    tie = recommend(_figs(hybrid_q=0.50, rag_q=0.49, significant=False, rag_fmt=0.95, half=0.015))
    assert "not significant" in tie.text
    assert tie.choice == "rag" and "no worse than hybrid by more than the margin of 0.030" in tie.text
    # ... but not when rag would give up the house format
    tie_bad_format = recommend(_figs(hybrid_q=0.50, rag_q=0.49, significant=False, rag_fmt=0.10, half=0.015))
    assert tie_bad_format.choice == "hybrid"
    _cited_ok(tie)


def test_a_latency_within_noise_does_not_make_an_arm_cheaper() -> None:
    figs = _figs(hybrid_q=0.50, rag_q=0.49, significant=False, rag_fmt=0.95, half=0.015)
    figs.arms[2] = _arm("rag", 0.49, 0.95, 1650)  # 3% faster than hybrid's 1700 ms: a draw on latency
    near = recommend(figs)
    assert near.choice == "rag" and "needs less set-up than hybrid" in near.text  # rag needs no training
    figs.arms[2] = _arm("rag", 0.49, 0.95, 1000)
    far = recommend(figs)
    assert far.choice == "rag" and "it is cheaper to run" in far.text
    figs.arms[3] = _arm("hybrid", 0.50, 0.95, 1050)  # hybrid is the leader and within 10% of rag: still rag
    assert recommend(figs).choice == "rag"
    for rec in (near, far):
        _cited_ok(rec)


def _ratio(a: str, b: str, ratio: float, low: float, high: float) -> RatioTest:
    return RatioTest(metric="e2e_equal_ms", a=a, b=b, n=32, ratio=ratio, low=low, high=high, p=0.01, p_holm=0.03)


def test_speed_follows_the_paired_ratio_interval_not_the_p50s() -> None:
    figs = _figs(hybrid_q=0.50, rag_q=0.49, significant=False, rag_fmt=0.95, half=0.015)
    figs.arms[2] = _arm("rag", 0.49, 0.95, 1000)  # p50s 41% apart ...
    wide = figs.model_copy(update={"latency": [_ratio("rag", "hybrid", 0.59, 0.40, 1.10)]})
    draw = _recommend(wide)  # ... but the interval of the ratio contains 1: a draw, set-up decides
    assert draw.choice == "rag" and "needs less set-up than hybrid at a latency not shown to differ" in draw.text
    assert "0.59x the latency of hybrid on the same questions (95% CI 0.40–1.10)" in draw.text
    values = {f.label: f.value for f in draw.figures}
    assert values["rag / hybrid latency ratio"].startswith("0.59x (95% CI 0.40–1.10, n=32")
    # measured the other way round (hybrid / rag), the interval excludes 1: rag is shown faster
    tight = figs.model_copy(update={"latency": [_ratio("hybrid", "rag", 1.7, 1.5, 1.9)]})
    fast = _recommend(tight)
    assert fast.choice == "rag" and "it is cheaper to run, 0.59x the latency of hybrid" in fast.text
    assert "(95% CI 0.53–0.67)" in fast.text
    # no paired latency comparison at all: nothing is shown faster, so p50s alone decide nothing
    assert "no paired latency comparison of rag and hybrid" in _recommend(figs).text
    for rec in (draw, fast):
        _cited_ok(rec)


def test_the_chosen_arm_cites_its_ratio_to_the_fastest_setup() -> None:
    figs = _figs(hybrid_q=0.55, rag_q=0.35, significant=True)  # hybrid wins; base is the fastest setup
    slower = figs.model_copy(update={"latency": [_ratio("hybrid", "base", 2.1, 1.9, 2.3)]})
    rec = _recommend(slower)
    assert rec.choice == "hybrid"
    assert "It is slower than the fastest setup, base: 2.10x the latency of base" in rec.text
    same = figs.model_copy(update={"latency": [_ratio("base", "hybrid", 0.97, 0.9, 1.04)]})
    assert "not shown to differ from the fastest setup's, base" in _recommend(same).text
    _cited_ok(rec)


def test_raft_sentence_follows_its_comparison() -> None:
    def with_raft(diff: float, significant: bool) -> VerdictFigures:
        figs = _figs(hybrid_q=0.55, rag_q=0.35, significant=True)
        figs.arms.append(_arm("hybrid-raft", 0.55 + diff, 0.95, 1700))
        figs.comparisons.append(
            Comparison(
                a="hybrid",
                b="hybrid-raft",
                metric="token F1",
                diff=-diff,
                lo=-diff - 0.015,
                hi=-diff + 0.015,
                p_value=0.01 if significant else 0.5,
                significant=significant,
            )
        )
        return figs

    pays = recommend(with_raft(0.08, True))
    same = recommend(with_raft(0.01, False))
    assert "lifts hybrid by +0.080" in pays.text and pays.choice == "hybrid-raft"
    assert "differ on token F1 in hybrid by +0.010" in same.text and "has not shown a gain" in same.text
    # a tie at the same latency goes to the arm with less set-up: RAFT is trained on top of the fine-tune
    assert same.choice == "hybrid" and "needs less set-up than hybrid-raft" in same.text
    _cited_ok(pays)
    _cited_ok(same)


def test_a_format_lead_keeps_the_dearer_arm_and_says_why() -> None:
    """RAFT within the margin of SFT on F1 but far ahead on format: hybrid-raft stays, and says why."""
    figs = _figs(hybrid_q=0.55, rag_q=0.35, significant=True)
    figs.arms[3] = _arm("hybrid", 0.55, 0.55, 1700)
    figs.arms.append(_arm("hybrid-raft", 0.56, 0.91, 1690))
    figs.comparisons.append(
        Comparison(
            a="hybrid-raft",
            b="hybrid",
            metric="token F1",
            diff=0.01,
            lo=-0.01,
            hi=0.025,
            p_value=0.46,
            significant=False,
        )
    )
    rec = recommend(figs)
    assert rec.choice == "hybrid-raft"
    assert "chosen over hybrid, which is as accurate within the margin" in rec.text and "in 55% of answers" in rec.text
    assert "RAFT keeps the house format better: 91%" in rec.text
    assert "has not shown a gain" not in rec.text
    _cited_ok(rec)
    figs.arms[3] = _arm("hybrid", 0.55, 0.89, 1700)  # format within tolerance: the tie goes to less set-up
    level = recommend(figs)
    assert level.choice == "hybrid" and "chosen over" not in level.text and "has not shown a gain" in level.text


def test_nested_seeded_subsets() -> None:
    items = list(range(40))
    a = nested_subsets(items, [0.25, 0.5, 1.0], seed=3)
    b = nested_subsets(items, [1.0, 0.5, 0.25], seed=3)
    assert a == b
    assert [len(a[f]) for f in (0.25, 0.5, 1.0)] == [10, 20, 40]
    assert set(a[0.25]) < set(a[0.5]) < set(a[1.0])
    assert a[0.5][:10] == a[0.25]
    assert nested_subsets(items, [0.5], seed=4)[0.5] != a[0.5]
    with pytest.raises(ValueError, match="fractions"):
        nested_subsets(items, [0.0])
    with pytest.raises(ValueError, match="no training examples"):
        nested_subsets([], [0.5])


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture()
def written(tmp_path: Path) -> dict[str, Path]:
    figs = with_speed(_figs(hybrid_q=0.55, rag_q=0.35, significant=True))
    result = VerdictResult(figures=figs, recommendation=recommend(figs), manifest={"seed": 0}, notes=["a note"])
    return write_verdict(tmp_path / "verdict", result)


def test_markdown_and_json_carry_the_recommendation_and_tables(written: dict[str, Path]) -> None:
    md = written["md"].read_text()
    assert "**Recommendation: hybrid**" in md
    assert "Latency ratios (same questions, interleaved" in md and "| base / hybrid | 32 | 0.47 | 0.45–0.49 |" in md
    for section in (
        "At a glance",
        "Pairwise comparisons",
        "Inference cost",
        "Update cost",
        "Set-up cost",
        "Data needs",
    ):
        assert f"## {section}" in md
    assert "| F1 | hybrid token F1 | 0.550" in md
    data = json.loads(written["json"].read_text())
    assert data["recommendation"]["choice"] == "hybrid"
    assert VerdictResult.model_validate(data).figures.arm("rag") is not None


def test_the_load_table_appears_only_when_load_levels_ran(written: dict[str, Path], tmp_path: Path) -> None:
    assert "Under load" not in written["md"].read_text()  # verdict.load_levels defaults to None: no load run
    rows = [
        LoadLevel(arm="rag", level=c, n=20, errors=0, seconds=2.0, requests_per_s=c / 2, tokens_per_s=4.0 * c)
        for c in (1, 4)
    ]
    rows[0].e2e_p50_ms, rows[0].e2e_p95_ms = 400.0, 700.0
    figs = with_speed(_figs(hybrid_q=0.55, rag_q=0.35, significant=True)).model_copy(update={"load": rows})
    paths = write_verdict(tmp_path / "loaded", VerdictResult(figures=figs, recommendation=recommend(figs)))
    md = paths["md"].read_text()
    assert "## Under load" in md and "| rag | 1 | 20 | 0 | 0.50 | 4.0 |" in md and "| 400 | 700 |" in md
    assert "n/a (n=20)" in md  # no TTFT recorded for the level: n/a with its n, not a blank
    assert "latency against throughput" in paths["html"].read_text()
    again = VerdictResult.model_validate(json.loads(paths["json"].read_text()))
    assert [(x.arm, x.level) for x in again.figures.load] == [("rag", 1), ("rag", 4)]


@pytest.mark.skipif(
    (CHROMIUM is None or CHROMEDRIVER is None) and not os.environ.get("RAGTUNE_REQUIRE_BROWSER"),
    reason="Chromium or chromedriver not installed (`make browser`)",
)
def test_html_renders_in_headless_chromium_without_console_errors(written: dict[str, Path], tmp_path: Path) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    assert CHROMIUM and CHROMEDRIVER, "RAGTUNE_REQUIRE_BROWSER is set but chromium or chromedriver is not on PATH"
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--window-size=1200,3000",
        "--disable-background-networking",
        "--disable-component-update",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # an explicit driver path: selenium's own driver manager would try the network
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=CHROMEDRIVER))
    try:
        driver.get(written["html"].resolve().as_uri())  # returns once the page's load event fired
        heading = driver.find_element(By.TAG_NAME, "h1").text
        images = driver.execute_script("return [...document.images].map(e => e.complete && e.naturalWidth > 0)")
        driver.save_screenshot(str(tmp_path / "verdict.png"))
        # console errors and uncaught page errors both arrive as SEVERE browser log entries
        problems = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    finally:
        driver.quit()
    assert problems == []
    assert "fine-tune, retrieve, or both" in heading.lower()
    assert images == [True, True]  # metric bars and learning curve decoded
    assert (tmp_path / "verdict.png").stat().st_size > 10_000
