import json
from pathlib import Path

import pytest

from ragtune.core.errors import DataError
from ragtune.eval.harness import metrics
from ragtune.eval.harness.data import EvalItem, load_items
from ragtune.eval.harness.report import write_report
from ragtune.eval.harness.runner import RunSettings, run_arm, summarize


def test_normalize_and_exact_match():
    assert metrics.normalize("The  Cat, sat!") == "cat sat"
    assert metrics.exact_match("the Paris.", ["paris"]) == 1.0
    assert metrics.exact_match("Paris France", ["paris"]) == 0.0


def test_token_f1_by_hand():
    # pred tokens: blue lamp ships ; gold: lamp ships mauve -> common 2, P=2/3, R=2/3, F1=2/3
    assert metrics.token_f1("blue lamp ships", ["lamp ships mauve"]) == pytest.approx(2 / 3)
    assert metrics.token_f1("nothing", ["else"]) == 0.0
    assert metrics.token_f1("a b", ["zzz", "a b"]) == 1.0


def test_contains_respects_word_boundaries():
    assert metrics.contains("It costs 45 florins.", ["45 florins"]) == 1.0
    assert metrics.contains("It costs 145 florins.", ["45 florins"]) == 0.0
    assert metrics.contains("anything", [""]) == 0.0


def test_extract_format_hit_percentile():
    assert metrics.extract("Answer: 42\nmore", r"Answer: (\d+)") == "42"
    assert metrics.extract("no match", r"Answer: (\d+)") == "no match"
    assert metrics.format_ok("Short answer.\nSources: Doc", r"^[^\n]{3,240}\nSources: [^\n]{3,}$") == 1.0
    assert metrics.format_ok("Short answer only.", r"^[^\n]{3,240}\nSources: [^\n]{3,}$") == 0.0
    assert metrics.format_ok("x", None) is None
    assert metrics.hit_at_k(["a", "b", "c"], ["c"], 2) == 0.0
    assert metrics.hit_at_k(["a", "b", "c"], ["c"], 3) == 1.0
    assert metrics.hit_at_k(["a"], [], 3) is None
    assert metrics.percentile([1, 2, 3, 4], 50) == 2.5


def test_load_items_errors(tmp_path: Path):
    f = tmp_path / "e.jsonl"
    f.write_text(json.dumps({"id": 1, "question": "q", "answers": ["a"]}) + "\n" + json.dumps({"id": 2}) + "\n")
    with pytest.raises(DataError, match=r"e\.jsonl:2: field 'question'"):
        load_items(f)
    f.write_text(json.dumps({"id": 1, "question": "q", "answers": []}) + "\n")
    with pytest.raises(DataError, match="answers"):
        load_items(f)


def test_runner_scores_real_answers_and_writes_reports(pipeline_factory, tmp_path: Path):
    p = pipeline_factory()
    items = [
        EvalItem(
            id="1",
            question="What does the Zorblat Basic plan cost?",
            answers=["17 florins"],
            doc_ids=["zorblat-pricing"],
        ),
        EvalItem(
            id="2",
            question="On which day does Zorblat support answer?",
            answers=["Wednesdays"],
            doc_ids=["zorblat-hours"],
        ),
        EvalItem(
            id="3", question="How long does the lamp battery last?", answers=["31 hours"], doc_ids=["zorblat-battery"]
        ),
    ]
    records = run_arm(p, items, "rag", p.config, RunSettings(latency_samples=1, progress=False)) + run_arm(
        p, items, "base", p.config, RunSettings(latency_samples=1, progress=False)
    )
    assert len(records) == 6 and {r.arm for r in records} == {"rag", "base"}
    rag = [r for r in records if r.arm == "rag"]
    assert all(r.hit == 1.0 for r in rag) and all(r.hit is None for r in records if r.arm == "base")
    for r in records:
        assert r.contains == metrics.contains(r.answer, r.golds)
    summary = summarize(records)
    assert summary["rag"]["hit_at_k"] == 1.0 and summary["rag"]["latency_n"] == 1
    assert summary["rag"]["accuracy"] == sum(r.contains for r in rag) / 3
    j, md = write_report(tmp_path / "out", summary, records, {"seed": 0})
    assert json.loads(j.read_text())["summary"]["rag"]["n"] == 3
    assert "| rag | 3 |" in md.read_text()
