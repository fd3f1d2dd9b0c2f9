"""The verdict's update cost is measured, not assumed: the update is really ingested and committed, the
ft adapter is really re-tuned from its own weights; and the verdict's inputs load from flags or a suite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console
from safetensors.torch import load_file

from ragtune.core.adapters import read_card
from ragtune.core.errors import ConfigError
from ragtune.core.sample import sample_path
from ragtune.core.types import Document
from ragtune.eval.harness.arms import ArmSpec
from ragtune.eval.harness.data import EvalItem
from ragtune.eval.verdict.inputs import load_suite, load_verdict_data
from ragtune.eval.verdict.run import _Trainer
from ragtune.eval.verdict.update_cost import RETUNED, absorb_update, update_examples

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"

NEW_BATTERY = "A Zorblat lamp battery lasts 44 hours. Charging takes 90 minutes."


def test_update_examples_come_from_the_new_sentences():
    docs = {"b": Document(id="b", title="Battery", text=f"Intro line. {NEW_BATTERY}")}
    items = [
        EvalItem(id="1", question="How long does it last?", answers=["44 hours"], doc_ids=["b"]),
        EvalItem(id="2", question="Colour?", answers=["teal"], doc_ids=["b"]),  # not in the new text: skipped
        EvalItem(id="3", question="Other?", answers=["x"], doc_ids=["missing"]),
    ]
    ex = update_examples(items, docs)
    assert [e.question for e in ex] == ["How long does it last?"]
    assert ex[0].answer == "A Zorblat lamp battery lasts 44 hours.\nSources: Battery" and ex[0].doc_id == "b"


@pytest.mark.slow  # a re-ingest and a retune (CI runs it; the local `make test` leaves it out)
def test_update_cost_really_reingests_and_retunes(serving_pipeline):
    pipeline = serving_pipeline(own_index=True)
    tuning = pipeline.config.tuning.model_copy(update={"batch_size": 2, "learning_rate": 2e-3})
    verdict = pipeline.config.verdict.model_copy(update={"retune_epochs": 2.0})
    config = pipeline.config.model_copy(update={"tuning": tuning, "verdict": verdict})
    index = pipeline.index
    before = index.snapshot
    question = "How long does a Zorblat battery last?"
    changed = [EvalItem(id="u1", question=question, answers=["44 hours"], doc_ids=["zorblat-battery"])]
    arms = [ArmSpec(name="ft", mode="ft", adapter="tiny"), ArmSpec(name="rag", mode="rag", max_new_tokens=4)]
    new = [Document(id="zorblat-battery", title="Zorblat Battery", text=NEW_BATTERY)]

    outcome = absorb_update(config, index, pipeline, arms, new, changed, _Trainer(config, Console(quiet=True)).retune)

    # re-ingested: a new committed snapshot whose search returns the new text
    assert outcome.snapshot_before == before != outcome.snapshot_after == index.snapshot
    assert index.get_document("zorblat-battery").text == NEW_BATTERY
    assert index.search("How long does the battery last?", k=1)[0].chunk.text.startswith(NEW_BATTERY[:30])
    # re-tuned: a new adapter continued from the deployed one, with weights that moved
    card = read_card(config.adapters_dir / RETUNED)
    assert card.parent_adapter == "tiny" and card.n_train == 1 and card.hyperparameters["epochs"] == 2.0
    old = load_file(str(config.adapters_dir / "tiny" / "adapter_model.safetensors"))
    new_w = load_file(str(config.adapters_dir / RETUNED / "adapter_model.safetensors"))
    assert old.keys() == new_w.keys() and any(not old[k].equal(new_w[k]) for k in old)
    costs = {c.arm: c for c in outcome.costs}
    assert costs["ft"].method == "retune" and costs["ft"].seconds and costs["ft"].seconds > 0
    assert costs["rag"].method == "ingest" and costs["rag"].seconds and costs["rag"].seconds > 0
    assert all(c.n_changed == 1 and c.changed_correct in (0.0, 1.0) for c in costs.values())
    rec = {r.arm: r for r in outcome.records}
    assert rec["ft"].adapter == RETUNED and rec["rag"].snapshot == index.snapshot
    assert "zorblat-battery" in rec["rag"].retrieved


def test_verdict_suite_resolves_paths_and_names_bad_keys(tmp_path: Path):
    (tmp_path / "s.yaml").write_text(
        "data: q.jsonl\ntrain: t.jsonl\ndocs: [docs]\nupdate: v2\nupdate_data: u.jsonl\ntrain_limit: 5\n"
    )
    suite = load_suite(tmp_path / "s.yaml")
    assert suite.data == (tmp_path / "q.jsonl").resolve() and suite.docs == [(tmp_path / "docs").resolve()]
    (tmp_path / "bad.yaml").write_text("data: q.jsonl\ntrain: t.jsonl\n")
    with pytest.raises(ConfigError, match="needs docs"):
        load_suite(tmp_path / "bad.yaml")
    (tmp_path / "bad.yaml").write_text("dataset: cmu_qa\nroot: x\nbogus: 1\n")
    with pytest.raises(ConfigError, match="'bogus'"):
        load_suite(tmp_path / "bad.yaml")
    (tmp_path / "bad.yaml").write_text("data: q.jsonl\ntrain: t.jsonl\ndocs: [d]\nupdate: v2\n")
    with pytest.raises(ConfigError, match="update_data"):
        load_suite(tmp_path / "bad.yaml")


def test_verdict_suite_loads_the_sample_domain_with_a_capped_train_set(tmp_path: Path):
    suite = tmp_path / "s.yaml"
    suite.write_text(
        json.dumps(
            {
                "data": str(sample_path("eval.jsonl")),
                "train": str(sample_path("train.jsonl")),
                "docs": [str(sample_path("docs", "v1"))],
                "update": str(sample_path("docs", "v2")),
                "update_data": str(sample_path("eval_update.jsonl")),
                "train_limit": 7,
            }
        )
    )
    data = load_verdict_data(load_suite(suite))
    assert len(data.examples) == 7 and data.items and data.docs and data.new_docs and data.changed
    again = load_verdict_data(load_suite(suite))
    assert [e.question for e in again.examples] == [e.question for e in data.examples]  # seeded cap


@pytest.mark.skipif(not (SHARED / "cmu_qa").is_dir(), reason="shared CMU-QA dataset not present")
def test_verdict_suite_on_cmu_qa_splits_by_article(tmp_path: Path):
    suite = tmp_path / "s.yaml"
    suite.write_text(f"dataset: cmu_qa\nroot: {SHARED / 'cmu_qa'}\ntrain_limit: 50\nmax_article_chars: 2000\n")
    data = load_verdict_data(load_suite(suite))
    assert len(data.examples) == 50 and data.items
    train_docs = {e.doc_id for e in data.examples}
    assert train_docs and not train_docs & {d for it in data.items for d in it.doc_ids}
    titles = {d.id: d.title for d in data.docs}
    assert all(e.answer.endswith(f"\nSources: {titles[e.doc_id or '']}") for e in data.examples)


def test_raft_training_gets_room_for_its_retrieved_chunks(config):
    from ragtune.eval.verdict.run import raft_tuning

    short = config.model_copy(update={"tuning": config.tuning.model_copy(update={"max_length": 384, "raft_k": 3})})
    t = raft_tuning(short)
    assert t["max_length"] >= 3 * 256 and t["context_dropout"] == 0.0
    assert t["batch_size"] == 1 and t["grad_accum"] == short.tuning.batch_size * short.tuning.grad_accum
    roomy = config.model_copy(update={"tuning": config.tuning.model_copy(update={"max_length": 2048})})
    assert raft_tuning(roomy)["max_length"] == 2048


def test_raft_adapter_continues_the_fine_tune_on_a_capped_seeded_subset(serving_pipeline):
    from ragtune.eval.verdict.run import raft_rows, raft_tuning
    from ragtune.tuning.data import Example

    pipeline = serving_pipeline(own_index=True)
    verdict = pipeline.config.verdict.model_copy(update={"raft_examples": 2})
    tuning = pipeline.config.tuning.model_copy(
        update={
            "val_fraction": 0.0,
            "test_fraction": 0.0,
            "raft_k": 2,
            "batch_size": 1,
            "grad_accum": 1,
            "learning_rate": 2e-3,
        }
    )
    config = pipeline.config.model_copy(update={"tuning": tuning, "verdict": verdict})
    examples = [
        Example(question=q, answer=a, doc_id=d)
        for q, a, d in [
            ("What does Basic cost?", "17 florins.\nSources: Zorblat Pricing", "zorblat-pricing"),
            ("When is support open?", "Wednesdays 9 to 13.\nSources: Zorblat Support Hours", "zorblat-hours"),
            ("Default colour?", "Mauve.\nSources: Zorblat Colours", "zorblat-colours"),
        ]
    ]
    snapshot = pipeline.index.snapshot
    raft = raft_rows(examples, pipeline.index, config, snapshot, Console(quiet=True))
    # the cap keeps a prefix of the (already shuffled) rows, each with the retriever's real chunks
    assert raft is not None and [e.question for e in raft] == [e.question for e in examples[:2]]
    assert all(e.context and len(e.context) <= 2 for e in raft)

    train = _Trainer(config, Console(quiet=True))
    train(raft, "raft-on-ft", snapshot=snapshot, tuning=raft_tuning(config), init="tiny")
    card = read_card(config.adapters_dir / "raft-on-ft")
    assert card.parent_adapter == "tiny" and card.snapshot == snapshot and card.n_train == 2
    parent = load_file(str(config.adapters_dir / "tiny" / "adapter_model.safetensors"))
    child = load_file(str(config.adapters_dir / "raft-on-ft" / "adapter_model.safetensors"))
    assert parent.keys() == child.keys() and any(not parent[k].equal(child[k]) for k in parent)
