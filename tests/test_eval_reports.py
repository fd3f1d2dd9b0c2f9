"""Summaries, manifest, reports and `ragtune eval compare` on hand-made records (no model needed)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jsonschema
import pytest

from ragtune.core.config import load_config
from ragtune.eval.harness.data import EvalItem
from ragtune.eval.harness.manifest import adapter_hashes, dataset_hash, manifest
from ragtune.eval.harness.report import latency_table, write_report
from ragtune.eval.harness.runner import Record, summarize
from ragtune.eval.harness.schema import REPORT_SCHEMA


def rec(arm: str, i: int, ok: float, total: float = 100.0, batched: bool = False, wall: float = 100.0) -> Record:
    return Record(
        id=f"q{i}",
        arm=arm,
        mode=arm,
        question=f"question {i}?",
        answer="yes" if ok else "no",
        extracted="yes" if ok else "no",
        golds=["yes"],
        exact_match=ok,
        f1=ok,
        contains=ok,
        format_ok=None,
        scores={"f1": ok, "exact_match": ok},
        batched=batched,
        retrieve_ms=total / 10,
        ttft_ms=total / 2,
        total_ms=total,
        wall_ms=wall,
    )


def test_summary_latency_percentiles_and_throughput_by_hand():
    rs = [rec("rag", i, float(i % 2), total=100.0 * (i + 1)) for i in range(4)]
    rs.append(rec("rag", 4, 1.0, total=5000.0, batched=True, wall=50.0))  # batched: not a latency sample
    s = summarize(rs)["rag"]
    assert s["n"] == 5 and s["latency_n"] == 4
    # single-request totals 100, 200, 300, 400 (linear interpolation between order statistics)
    assert s["p50_ms"] == pytest.approx(250.0)
    # four samples cannot support a p95 or p99 (they would just be the maximum): none is given
    assert s["p95_ms"] is None and s["p99_ms"] is None and s["retrieve_p99_ms"] is None
    assert s["ttft_p50_ms"] == pytest.approx(125.0) and s["retrieve_p50_ms"] == pytest.approx(25.0)
    assert "n/a (n=4)" in latency_table({"rag": s}) and "| 4 |" in latency_table({"rag": s})
    assert s["throughput_qps"] == pytest.approx(5 / 0.45)  # 5 questions in 4 x 100 + 50 ms
    assert s["f1"] == pytest.approx(3 / 5) and s["metrics"]["exact_match"] == pytest.approx(3 / 5)


def test_manifest_traces_adapter_cards_data_config_and_code(tmp_path: Path):
    cfg = load_config(workspace=tmp_path / "ws", environ={})
    card = cfg.adapters_dir / "house" / "adapter_card.json"
    card.parent.mkdir(parents=True)
    card.write_text('{"name": "house"}')
    hashes = adapter_hashes(cfg.adapters_dir, ["house", None, "missing", "house"])
    assert list(hashes) == ["house"] and len(hashes["house"]) == 16
    card.write_text('{"name": "house", "epochs": 2}')
    assert adapter_hashes(cfg.adapters_dir, ["house"])["house"] != hashes["house"]  # a changed card shows
    items = [EvalItem(id="1", question="q?", answers=["a"])]
    h = dataset_hash(items)
    assert h == dataset_hash([EvalItem(id="1", question="q?", answers=["a"])])
    assert h != dataset_hash([EvalItem(id="1", question="q?", answers=["b"])])
    m = manifest(cfg, {"snapshot": "s00001-abc", "adapters": hashes, "dataset_hash": h})
    assert m["config_hash"] == cfg.digest() and m["seed"] == cfg.generation.seed
    assert m["packages"]["torch"] and m["packages"]["scipy"] and m["snapshot"] == "s00001-abc"
    assert m["git_commit"] is None or len(m["git_commit"].split("+")[0]) == 40


def _report(out: Path, rag_ok: list[float], meta: dict[str, object]) -> Path:
    base_ok = [0.0] * len(rag_ok)
    records = [rec("base", i, v) for i, v in enumerate(base_ok)] + [rec("rag", i, v) for i, v in enumerate(rag_ok)]
    json_path, _ = write_report(out, summarize(records), records, {"bootstrap_resamples": 500, **meta})
    return json_path


def test_report_schema_winner_and_compare_cli(tmp_path: Path, monkeypatch, capsys):
    cfg = load_config(workspace=tmp_path / "ws", environ={})
    old = _report(tmp_path / "old", [0.0] * 30, manifest(cfg, {"snapshot": "s1"}))
    new = _report(tmp_path / "new", [1.0] * 24 + [0.0] * 6, manifest(cfg, {"snapshot": "s2"}))
    doc = json.loads(new.read_text())
    jsonschema.validate(doc, REPORT_SCHEMA)
    t = next(t for t in doc["comparisons"] if t["metric"] == "exact_match")
    # 24 discordant pairs, all one way: exact McNemar p = 2 * 0.5**24 (one pair of arms: Holm leaves it)
    assert t["test"] == "exact McNemar" and t["p"] == pytest.approx(2 * 0.5**24) and t["winner"] == "rag"
    assert t["p_holm"] == pytest.approx(t["p"]) and t["significant"]
    assert t["discordant"] == [24, 0] and "rag better" in t["verdict"]
    assert doc["intervals"]["rag"]["f1"]["mean"] == pytest.approx(0.8)
    html = (new.parent / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 2
    same = json.loads(old.read_text())["comparisons"]
    assert all(not c["significant"] and c["winner"] is None for c in same)
    assert "no significant difference" in (old.parent / "report.md").read_text()

    from ragtune.cli import main

    out_md = tmp_path / "cmp.md"
    monkeypatch.setattr(sys, "argv", ["ragtune", "eval", "compare", str(old), str(new), "--out", str(out_md)])
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code in (0, None)
    md = out_md.read_text()
    assert "snapshot: s1 -> s2" in md and "rag (new) − rag (old)" in md and "rag (new) better" in md
    assert "base (new) − base (old)" in md and "no significant difference" in md  # base did not move

    monkeypatch.setattr(sys, "argv", ["ragtune", "eval", "compare", str(tmp_path / "nope.json"), str(new)])
    with pytest.raises(SystemExit) as bad:
        main()
    err = capsys.readouterr().err.strip()
    assert bad.value.code == 2 and err.startswith("error: report not found") and "\n" not in err


def test_eval_cli_rejects_bad_data_before_loading_models(tmp_path: Path, monkeypatch, capsys):
    from ragtune.cli import main

    bad = tmp_path / "qa.jsonl"
    bad.write_text('{"id": "1", "question": "q?"}\n')
    argv = ["ragtune", "eval", "--data", str(bad), "--workspace", str(tmp_path / "ws"), "--out", str(tmp_path / "o")]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as done:
        main()
    err = capsys.readouterr().err.strip()
    assert done.value.code == 2 and err.startswith("error: ") and "qa.jsonl:1" in err and "\n" not in err
    assert not (tmp_path / "o" / "records.jsonl").exists()


class Scripted:
    """A backend that answers "yes" at once and logs each call: the runner's scheduling, no model."""

    name = "scripted"

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str]]] = []

    def current_snapshot(self) -> str | None:
        return None

    def answer(self, questions, arm, snapshot):  # type: ignore[no-untyped-def]
        from ragtune.core.types import Answer

        self.calls.append((arm.name, [q.split()[-1] for q in questions]))
        return [Answer(answer="yes", mode=arm.mode) for _ in questions]

    def ranked_docs(self, questions, arm, snapshot, depth):  # type: ignore[no-untyped-def]
        return None

    def context_texts(self, answer):  # type: ignore[no-untyped-def]
        return None


def test_blocks_interleave_arms_and_a_deadline_leaves_paired_records(tmp_path: Path):
    import time
    from dataclasses import replace

    from ragtune.eval.harness.arms import EvalSuite
    from ragtune.eval.harness.runner import Journal, RunSettings, run_arms
    from ragtune.eval.harness.session import evaluate

    cfg = load_config(workspace=tmp_path / "ws", environ={}, overrides={"eval": {"latency_samples": 1}})
    items = [EvalItem(id=f"q{i}", question=f"question q{i}", answers=["yes"]) for i in range(5)]
    arms = EvalSuite.model_validate({"arms": ["base", "ft"]}).arms
    b = Scripted()
    recs = run_arms(b, items, arms, cfg, RunSettings(latency_samples=1, progress=False, block=2))
    assert b.calls == [
        ("base", ["q0"]),  # the latency sample, alone
        ("base", ["q1"]),
        ("ft", ["q0"]),
        ("ft", ["q1"]),
        ("base", ["q2", "q3"]),  # later blocks: batched only
        ("ft", ["q2", "q3"]),
        ("base", ["q4"]),
        ("ft", ["q4"]),
    ]
    assert [(r.arm, r.id) for r in recs] == [(a, f"q{i}") for a in ("base", "ft") for i in range(5)]
    assert [r.batched for r in recs if r.arm == "base"] == [False, True, True, True, True]

    run = RunSettings(journal=Journal(tmp_path / "j.jsonl"), latency_samples=1, progress=False, block=2)
    late = Scripted()
    first = run_arms(late, items, arms, cfg, replace(run, deadline=time.monotonic() - 1))
    assert {(r.arm, r.id) for r in first} == {(a, q) for a in ("base", "ft") for q in ("q0", "q1")}
    rest = run_arms(late, items, arms, cfg, run)
    assert len(rest) == 10 and sum(len(ids) for _, ids in late.calls) == 10  # nothing answered twice

    suite = EvalSuite.model_validate({"arms": ["base", "ft"]})
    run = evaluate(
        cfg,
        suite,
        Scripted(),
        tmp_path / "out",
        items=items,
        settings=RunSettings(progress=False, block=2, deadline=0.0),
    )
    doc = json.loads(run.json_path.read_text())
    assert doc["manifest"]["questions"] == 2 and doc["manifest"]["questions_planned"] == 5
    # the constant baseline (the eval set's own majority here: no training data) runs in the same blocks
    assert {a: s["n"] for a, s in doc["summary"].items()} == {"base": 2, "ft": 2, "constant-evalset": 2}
