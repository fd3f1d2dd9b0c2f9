"""The harness end to end on real models and a real FAISS index: arms and variants, journal and
resume (also after a kill), statistics and reports, compare, freshness, and the HTTP black box."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest
from net import free_port

from ragtune.core.config import load_config
from ragtune.core.errors import ConfigError, DataError
from ragtune.core.types import Document
from ragtune.eval.harness.arms import EvalSuite, load_suite
from ragtune.eval.harness.backends import HttpBackend, InProcessBackend
from ragtune.eval.harness.compare import compare_reports
from ragtune.eval.harness.data import EvalItem
from ragtune.eval.harness.runner import Journal, RunSettings, Scoring, run_arms
from ragtune.eval.harness.schema import REPORT_SCHEMA
from ragtune.eval.harness.session import evaluate

ITEMS = [
    EvalItem(
        id="1", question="What does the Zorblat Basic plan cost?", answers=["17 florins"], doc_ids=["zorblat-pricing"]
    ),
    EvalItem(
        id="2", question="On which day does Zorblat support answer?", answers=["Wednesdays"], doc_ids=["zorblat-hours"]
    ),
    EvalItem(
        id="3", question="How long does the lamp battery last?", answers=["31 hours"], doc_ids=["zorblat-battery"]
    ),
]


def test_suite_file_forms_and_errors(tmp_path: Path):
    f = tmp_path / "suite.yaml"
    f.write_text(
        "data: qa.jsonl\nseed: 3\narms:\n  base: {}\n  rag-k1: {mode: rag, top_k: 1, search_mode: lexical}\n"
        "  hybrid-terse: {mode: hybrid, adapter: tiny, system_prompt: Be brief., max_new_tokens: 8}\n"
    )
    s = load_suite(f)
    assert [a.name for a in s.arms] == ["base", "rag-k1", "hybrid-terse"] and s.arms[1].mode == "rag"
    assert s.data == (tmp_path / "qa.jsonl").resolve() and s.seed == 3 and s.arms[2].tuned
    assert EvalSuite.model_validate({"arms": ["base", {"name": "x", "mode": "ft"}]}).arms[1].mode == "ft"
    f.write_text("arms: [base, fancy]\n")
    with pytest.raises(ConfigError, match="arms.1.mode"):
        load_suite(f)
    f.write_text("arms: [base, base]\n")
    with pytest.raises(ConfigError, match="unique"):
        load_suite(f)
    f.write_text("arms:\n  b: {mode: base, retrieval_only: true}\n")
    with pytest.raises(ConfigError, match="retrieval_only"):
        load_suite(f)


class Counting(InProcessBackend):
    calls = 0

    def answer(self, questions, arm, snapshot):  # type: ignore[no-untyped-def]
        Counting.calls += len(questions)
        return super().answer(questions, arm, snapshot)


@pytest.mark.slow  # several eval runs with the model (CI runs it; the local `make test` leaves it out)
def test_arms_variants_statistics_reports_and_resume(pipeline_factory, tmp_path: Path):
    p = pipeline_factory()
    suite = EvalSuite.model_validate(
        {
            "arms": {
                "base": {"max_new_tokens": 12},
                "rag": {"max_new_tokens": 12},
                "rag-k1": {"mode": "rag", "top_k": 1, "max_new_tokens": 12},
                "rag-ret": {"mode": "rag", "retrieval_only": True},
            }
        }
    )
    cfg = p.config.model_copy(update={"eval": p.config.eval.model_copy(update={"latency_samples": 1})})
    out = tmp_path / "run"
    run = evaluate(cfg, suite, Counting(p), out, items=ITEMS, settings=RunSettings(progress=False))
    # three generating arms x three questions; retrieval-only and baselines generate nothing; then the
    # latency sample (latency_samples=1): per generating arm one uncounted warm-up and one timed request
    assert Counting.calls == 9 + 3 * 2
    by = {(r.arm, r.id): r for r in run.records}
    # every eval adds the two baselines as arms: the eval set's majority (no training data) and extractive
    assert {a for a, _ in by} == {"base", "rag", "rag-k1", "rag-ret", "constant-evalset", "extractive"}
    assert len(by) == 18 and len(run.records) == 18
    snap = p.index.snapshot
    for it in ITEMS:
        rag, k1, ret = by[("rag", it.id)], by[("rag-k1", it.id)], by[("rag-ret", it.id)]
        assert rag.retrieved[0] == it.doc_ids[0] and rag.scores["hit@1"] == 1.0 and rag.scores["mrr"] == 1.0
        assert len(k1.cited) == 1 and k1.scores["citation"] == 1.0 and rag.snapshot == snap
        assert 0.0 <= rag.scores["grounding"] <= 1.0 and ret.answer == "" and "f1" not in ret.scores
        assert ret.scores["recall@3"] == 1.0 and "hit@1" not in by[("base", it.id)].scores
        ext = by[("extractive", it.id)]
        assert ext.answer and ext.completion_tokens == 0 and ext.cited == it.doc_ids[:1]
    doc = json.loads(run.json_path.read_text())
    jsonschema.validate(doc, REPORT_SCHEMA)
    assert doc["manifest"]["snapshot"] == snap and doc["manifest"]["dataset_hash"]
    assert doc["intervals"]["rag"]["hit@1"]["mean"] == 1.0
    pairs = {(t["a"], t["b"], t["metric"]): t for t in doc["comparisons"]}
    t = pairs[("rag", "base", "contains")]
    assert t["test"] == "exact McNemar" and t["p_holm"] >= t["p"]
    assert all(t["winner"] is None or t["significant"] for t in doc["comparisons"])  # n=3: nothing significant
    md = run.md_path.read_text()
    assert "Paired comparisons" in md and "no significant difference" in md and "| rag-k1 |" in md
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "http" not in page.split("<body>")[1].split("Manifest")[0]
    # a second run on the same folder resumes: nothing left to generate, same records
    again = evaluate(cfg, suite, Counting(p), out, items=ITEMS, settings=RunSettings(progress=False))
    assert Counting.calls == 15 and [r.answer for r in again.records] == [r.answer for r in run.records]
    # another arm set cannot silently reuse the records
    with pytest.raises(DataError, match="different run"):
        evaluate(
            cfg,
            EvalSuite.model_validate({"arms": ["base"]}),
            Counting(p),
            out,
            items=ITEMS,
            settings=RunSettings(progress=False),
        )
    tests, cmp_md = compare_reports(run.json_path, again.json_path)
    assert tests and all(t.diff == 0 and not t.significant for t in tests) and "rag (new)" in cmp_md


@pytest.mark.slow
def test_killed_eval_resumes_where_it_stopped(tmp_path: Path):
    data = tmp_path / "qa.jsonl"
    qs = [f"Name one colour of the rainbow number {i}." for i in range(8)]
    data.write_text(
        "".join(json.dumps({"id": f"q{i}", "question": q, "answers": ["red"]}) + "\n" for i, q in enumerate(qs))
    )
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "RAGTUNE_GENERATION__BATCH_SIZE": "1",
        "RAGTUNE_GENERATION__MAX_NEW_TOKENS": "6",
        "RAGTUNE_EVAL__LATENCY_SAMPLES": "0",
    }
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "ragtune.cli", "eval", "--data", str(data), "--arms", "base", "--out", str(out)]
    cmd += ["--workspace", str(tmp_path / "ws"), "--no-progress"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    journal = out / "records.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if journal.is_file() and len(journal.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = [r for r in Journal(journal).read() if r.arm == "base"]
    assert 2 <= len(before) < 8, "the run should have been killed mid-way"
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    records = Journal(journal).read()
    after = [r for r in records if r.arm == "base"]
    assert sorted(r.id for r in after) == [f"q{i}" for i in range(8)]  # each question exactly once
    # the constant baseline (no index here, so no extractive one) answers each question once too
    assert sorted(r.id for r in records if r.arm == "constant-evalset") == [f"q{i}" for i in range(8)]
    assert [r.model_dump() for r in after[: len(before)]] == [r.model_dump() for r in before]
    assert json.loads((out / "report.json").read_text())["summary"]["base"]["n"] == 8


@pytest.mark.slow
def test_freshness_scenario_reports_who_followed(generator, tmp_path: Path):
    from ragtune.retrieval.index import Index
    from ragtune.serving.pipeline import Pipeline

    cfg = load_config(workspace=tmp_path / "ws", environ={}, overrides={"generation": {"max_new_tokens": 16}})
    index = Index.from_config(cfg)
    index.upsert(
        [Document(id="plans", title="Zorblat Plans", text="The Zorblat Basic plan costs 17 florins a month.")],
        progress=False,
    )
    update = tmp_path / "v2.jsonl"
    update.write_text(
        json.dumps(
            {"id": "plans", "title": "Zorblat Plans", "text": "The Zorblat Basic plan costs 23 florins a month."}
        )
        + "\n"
    )
    items = [
        EvalItem(
            id="f1",
            question="How much does the Zorblat Basic plan cost?",
            answers=["23 florins"],
            stale_answers=["17 florins"],
            version="v2",
        ),
    ]
    suite = EvalSuite.model_validate({"arms": ["base", "rag"], "update": str(update)})
    run = evaluate(
        cfg,
        suite,
        InProcessBackend(Pipeline(cfg, generator, index)),
        tmp_path / "out",
        items=items,
        settings=RunSettings(progress=False),
    )
    fresh = json.loads(run.json_path.read_text())["freshness"]
    assert fresh["snapshot_before"] != fresh["update"]["snapshot"]
    rag, base = fresh["arms"]["rag"], fresh["arms"]["base"]
    assert base["after"] == 0.0 and not base["followed"]
    assert rag["before"] == 1.0 and rag["after"] == 1.0 and rag["stale_after"] == 0.0 and rag["followed"]
    assert "| rag | 1 |" in run.md_path.read_text()


def test_endpoint_black_box_against_live_server(pipeline_factory, live_server, tmp_path: Path):
    from ragtune.serving.app import create_app

    p = pipeline_factory()
    with live_server(create_app(p)) as url:
        backend = HttpBackend(url, concurrency=2)
        suite = EvalSuite.model_validate({"arms": {"base": {"max_new_tokens": 8}, "rag": {"max_new_tokens": 8}}})
        records = run_arms(
            backend,
            ITEMS,
            suite.arms,
            p.config,
            RunSettings(Scoring(), journal=Journal(tmp_path / "r.jsonl"), latency_samples=1, progress=False),
        )
        assert len(records) == 6 and all(r.answer for r in records)
        rag = [r for r in records if r.arm == "rag"]
        assert all(r.retrieved and r.retrieved[0] == r.gold_docs[0] for r in rag)
        assert {r.snapshot for r in rag} == {p.index.snapshot} and all(r.total_ms > 0 for r in records)
        assert "grounding" not in rag[0].scores  # the API does not return passage text
        bad = EvalSuite.model_validate({"arms": {"rag": {"search_mode": "lexical"}}})
        with pytest.raises(Exception, match="cannot be set through the API"):
            run_arms(backend, ITEMS[:1], bad.arms, p.config, RunSettings(Scoring(), latency_samples=0, progress=False))
        with pytest.raises(Exception, match="cannot reach"):
            HttpBackend(f"http://127.0.0.1:{free_port()}").answer(["q"], suite.arms[0], None)


def test_pinned_snapshot_holds_while_the_index_moves(generator, tmp_path: Path):
    from ragtune.core.errors import NotFoundError
    from ragtune.retrieval.index import Index
    from ragtune.serving.pipeline import Pipeline

    cfg = load_config(workspace=tmp_path / "ws", environ={}, overrides={"generation": {"max_new_tokens": 4}})
    index = Index.from_config(cfg)
    index.upsert(
        [Document(id="plans", title="Zorblat Plans", text="The Zorblat Basic plan costs 17 florins a month.")],
        progress=False,
    )
    pinned = index.snapshot
    # a document added after the pin matches the question better; the pinned run must not see it
    index.upsert(
        [Document(id="prices", title="Zorblat Basic Plan Cost", text="What the Zorblat Basic plan costs: 23 florins.")],
        progress=False,
    )
    assert index.snapshot != pinned
    backend = InProcessBackend(Pipeline(cfg, generator, index))
    q = "What does the Zorblat Basic plan cost?"
    item = EvalItem(id="1", question=q, answers=["17 florins"], doc_ids=["plans"])
    arms = EvalSuite.model_validate({"arms": {"rag": {}, "ret": {"mode": "rag", "retrieval_only": True}}}).arms
    old = run_arms(backend, [item], arms, cfg, RunSettings(Scoring(), pinned, latency_samples=0, progress=False))
    assert [r.retrieved for r in old] == [["plans"], ["plans"]] and old[0].snapshot == pinned
    assert old[0].cited == ["plans"] and old[0].scores["hit@1"] == 1.0
    now = run_arms(backend, [item], arms, cfg, RunSettings(Scoring(), latency_samples=0, progress=False))
    assert now[0].snapshot == index.snapshot and set(now[1].retrieved) == {"plans", "prices"}
    with pytest.raises(NotFoundError, match="unknown snapshot"):
        run_arms(
            backend, [item], arms[1:], cfg, RunSettings(Scoring(), "s09999-deadbeef", latency_samples=0, progress=False)
        )
