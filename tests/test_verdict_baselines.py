"""Trivial baselines, label tasks and answers to read: the constant takes the training majority as the
eval extracts it, the extractive baseline answers a retrieved sentence from a real index, label
sets get confusion counts, answers.jsonl holds every arm, and a verdict on a set whose labels a
constant answers as well as any setup ends with "none"."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from ragtune.core.config import load_config
from ragtune.eval.harness.arms import ArmSpec, EvalSuite
from ragtune.eval.harness.backends import InProcessBackend
from ragtune.eval.harness.baselines import baseline_arms, majority_answer
from ragtune.eval.harness.data import EvalItem
from ragtune.eval.harness.labels import OTHER, detect_labels, label_report, to_label
from ragtune.eval.harness.runner import Record, RunSettings, Scoring, run_arms
from ragtune.eval.verdict.answers import collect, disagreements
from ragtune.eval.verdict.inputs import VerdictData
from ragtune.retrieval.compress import split_sentences
from ragtune.tuning.data import Example


def _rec(arm: str, i: int, answer: str, gold: str, f1: float = 0.0) -> Record:
    return Record(
        id=f"q{i}",
        arm=arm,
        question=f"question {i}?",
        answer=answer,
        extracted=answer,
        golds=[gold],
        exact_match=f1,
        f1=f1,
        contains=f1,
        format_ok=None,
    )


def test_constant_is_the_training_majority_after_extraction() -> None:
    answers = ["Answer: No, never.", "Answer: yes", "Answer: YES!", "It is: maybe", "Answer: Yes."]
    # extracted and normalised as the metrics do: yes x3 (one differently cased and punctuated), no, maybe
    assert majority_answer(answers, r"Answer: (\w+)") == "yes"
    # without the extraction the raw answers are all different: the first of the most frequent
    assert majority_answer(["b", "a", "a", "b"]) == "b"
    assert majority_answer(["", "  "]) is None
    arms, notes = baseline_arms(["constant", "extractive"], None)
    assert [a.name for a in arms] == ["extractive"] and notes  # no constant to give, said so


def test_verdict_baselines_take_the_constant_from_training_answers(config) -> None:
    from ragtune.eval.verdict.run import verdict_baselines

    examples = [Example(question=f"q{i}?", answer=a) for i, a in enumerate(["Verdict: no", "Verdict: yes"] * 2)]
    examples.append(Example(question="q9?", answer="Verdict: No."))
    arms, _ = verdict_baselines(config, examples, Scoring(answer_regex=r"Verdict: (\w+)"))
    assert {a.name: a.constant for a in arms} == {"constant": "no", "extractive": None}


def test_label_tasks_are_detected_and_confusion_counted() -> None:
    golds = [["yes"], ["Yes."], ["no"], ["no"], ["maybe"], ["maybe"], ["yes"]]
    assert detect_labels(golds) == ["yes", "no", "maybe"]
    assert detect_labels([["14 litres", "14"], ["9 pods"], ["9 pods"], ["Sprig Brain"]]) is None  # open answers
    assert detect_labels([["yes"], ["yes"], ["no"], ["yes"]]) is None  # "no" occurs once: not a closed set
    labels = ["yes", "no", "maybe"]
    assert to_label("Yes, it does.", "Yes, it does.", labels) == "yes"
    assert to_label("I think the answer is no.", "I think the answer is no.", labels) == "no"
    assert to_label("yes or no", "yes or no", labels) == "yes"  # starts with a label
    assert to_label("It depends.", "It depends.", labels) == OTHER
    # "always yes" against 3 yes, 2 no, 2 maybe; a model that gets the yes/no right and dodges maybe
    gold = ["yes", "yes", "no", "yes", "no", "maybe", "maybe"]
    recs = [_rec("constant", i, "yes", g) for i, g in enumerate(gold)]
    recs += [_rec("ft", i, g if g != "maybe" else "hmm", g) for i, g in enumerate(gold)]
    rep = label_report(recs)
    assert rep is not None and rep.labels == ["yes", "no", "maybe"]
    const, ft = rep.arms
    assert const.distribution == {"yes": 7, "no": 0, "maybe": 0, OTHER: 0}
    assert const.confusion["no"] == {"yes": 2, "no": 0, "maybe": 0, OTHER: 0}
    assert const.accuracy == pytest.approx(3 / 7)
    assert const.macro_f1 == pytest.approx((2 * 3 / (2 * 3 + 4)) / 3)  # yes F1 0.6, no and maybe 0
    assert ft.accuracy == pytest.approx(5 / 7) and ft.confusion["maybe"][OTHER] == 2
    assert ft.macro_f1 == pytest.approx(2 / 3)


def test_answers_keep_every_arm_and_disagreements_come_first() -> None:
    recs = [_rec("ft", i, a, "yes", f1) for i, (a, f1) in enumerate([("yes", 1.0), ("no", 0.0), ("yes", 1.0)])]
    recs += [_rec("constant", i, "yes", "yes", 1.0) for i in range(3)]
    recs += [_rec("ft:seed1", i, "yes", "yes", 1.0) for i in range(3)]
    rows = collect(recs)
    assert [r.id for r in rows] == ["q0", "q1", "q2"]
    assert all(set(r.answers) == {"ft", "constant", "ft:seed1"} for r in rows)
    shown = disagreements(rows, ["ft", "constant"])
    assert [r.id for r in shown] == ["q1"] and set(shown[0].answers) == {"ft", "constant"}


def test_extractive_answers_a_retrieved_sentence_and_constant_a_fixed_one(pipeline_factory, fact_docs) -> None:
    pipeline = pipeline_factory()
    items = [
        EvalItem(id="p", question="How much does the Zorblat Pro plan cost?", answers=["45 florins"]),
        EvalItem(id="h", question="What is the Zorblat hotline number?", answers=["555-0199"]),
    ]
    arms = [ArmSpec(name="extractive", mode="rag", baseline="extractive")]
    arms += [ArmSpec(name="constant", mode="base", baseline="constant", constant="17 florins")]
    recs = run_arms(pipeline, items, arms, pipeline.config, RunSettings(progress=False))
    ext = {r.id: r for r in recs if r.arm == "extractive"}
    sentences = {d.id: split_sentences(d.text) for d in fact_docs}
    assert ext["p"].answer in sentences["zorblat-pricing"] and "florins" in ext["p"].answer
    assert ext["h"].answer in sentences["zorblat-hours"]
    assert ext["p"].cited == ["zorblat-pricing"] and ext["p"].f1 > 0 and ext["p"].completion_tokens == 0
    const = [r for r in recs if r.arm == "constant"]
    assert [r.answer for r in const] == ["17 florins", "17 florins"] and const[0].f1 == pytest.approx(0.5)


def test_eval_reports_show_the_baselines(pipeline_factory, tmp_path: Path) -> None:
    from ragtune.eval.harness.session import evaluate

    pipeline = pipeline_factory()
    items = [
        EvalItem(id=f"q{i}", question=q, answers=[a])
        for i, (q, a) in enumerate(
            [
                ("Does the Zorblat lamp ship in mauve?", "yes"),
                ("Is the Zorblat hotline 555-0199?", "yes"),
                ("Does support answer on Sundays?", "no"),
                ("Is mauve the default colour?", "yes"),
                ("Does the battery last 90 hours?", "no"),
            ]
        )
    ]
    suite = EvalSuite.model_validate({"arms": [{"name": "rag", "max_new_tokens": 4}]})
    run = evaluate(
        pipeline.config,
        suite,
        InProcessBackend(pipeline),
        tmp_path / "out",
        items=items,
        settings=RunSettings(progress=False),
    )
    doc = json.loads(run.json_path.read_text())
    assert set(doc["summary"]) == {"rag", "constant-evalset", "extractive"}
    assert {(t["a"], t["b"]) for t in doc["comparisons"] if t["metric"] == "f1"} >= {("constant-evalset", "rag")}
    md = run.md_path.read_text()
    assert 'constant-evalset answers "yes" to every question' in md and "optimistic" in md
    assert "Confusion matrix: constant-evalset" in md and "unadjusted 95% CI" in md


@pytest.mark.slow
def test_verdict_end_to_end_on_labels_a_constant_answers_ends_with_none(fact_docs, tmp_path: Path) -> None:
    """Labels mostly "yes": no setup can significantly beat "always yes" on 8 questions; the verdict
    says so, names the baselines, shows the label tables, and writes every arm's answers."""
    from ragtune.eval.verdict.run import run_verdict

    config = load_config(
        workspace=tmp_path / "ws",
        environ={},
        overrides={
            "generation": {"max_new_tokens": 6},
            "tuning": {"epochs": 1, "batch_size": 8, "val_fraction": 0.0, "format_sample": 0},
            "eval": {"latency_samples": 1, "bootstrap_resamples": 500},
            "verdict": {"few_shot_k": 0, "curve_fractions": [1.0], "raft": False, "eval_limit": None},
        },
    )
    facts = ["Is the Basic plan 17 florins?", "Is support open on Wednesdays?", "Is mauve the default?"]
    facts += ["Does the battery last 31 hours?", "Is the Pro plan 45 florins?", "Is the hotline 555-0199?"]
    wrong = ["Is support open on Sundays?", "Is ochre the default?"]
    examples = [Example(question=q, answer="yes") for q in facts] + [Example(question=q, answer="no") for q in wrong]
    items = [EvalItem(id=f"e{i}", question=q, answers=["yes"]) for i, q in enumerate(facts)]
    items += [EvalItem(id=f"n{i}", question=q, answers=["no"]) for i, q in enumerate(wrong)]
    data = VerdictData(items=items, examples=examples, docs=fact_docs)
    paths = run_verdict(config, data, tmp_path / "out", Console(quiet=True))

    verdict = json.loads(paths["json"].read_text())
    assert verdict["recommendation"]["choice"] == "none"
    assert verdict["recommendation"]["sentences"][0].startswith("No setup here beats the baselines")
    arms = {a["arm"]: a for a in verdict["figures"]["arms"]}
    assert arms["constant"]["baseline"] == "constant" and arms["constant"]["answer"] == "yes"
    assert arms["constant"]["quality"]["mean"] == pytest.approx(6 / 8)
    assert verdict["figures"]["labels"]["labels"] == ["yes", "no"]
    rows = [json.loads(line) for line in paths["answers"].read_text().splitlines()]
    assert len(rows) == 8
    assert all(set(r["answers"]) == {"base", "ft", "rag", "hybrid", "constant", "extractive"} for r in rows)
    md = paths["md"].read_text()
    for heading in ("Trivial baselines", "Confusion matrix: constant", "simultaneous 95% CI", "Answers to read"):
        assert heading in md
