"""The notebook API: lazy top-level names, and in-memory inputs (lists of dicts, datasets.Dataset) with
errors that name the bad row and what is wrong with it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import datasets
import pytest

import ragtune
from ragtune.core.errors import ConfigError, DataError
from ragtune.eval.harness.data import items_from
from ragtune.retrieval.loaders import documents_from
from ragtune.tuning.data import examples_from

DOCS = [
    {"id": "lamp", "title": "Zorblat Battery", "text": "A Zorblat lamp battery lasts 31 hours.", "metadata": {"v": 1}},
    {"id": 7, "text": "Zorblat support answers on Wednesdays from 9 to 13."},
]
QUESTIONS = [
    {"id": "q1", "question": "How long does a Zorblat battery last?", "answers": ["31 hours"], "doc_ids": ["lamp"]},
    {"id": "2", "question": "When does Zorblat support answer?", "answers": ["on Wednesdays"]},
]


def test_import_is_lazy_and_names_resolve() -> None:
    code = "import sys, ragtune; assert 'torch' not in sys.modules; assert 'ragtune.api' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
    assert {"load_config", "Index", "Pipeline", "train_adapter", "evaluate", "verdict"} <= set(dir(ragtune))
    from ragtune.retrieval.index import Index

    assert ragtune.Index is Index
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = ragtune.nope  # type: ignore[attr-defined]


def test_documents_from_dicts_and_a_dataset_agree() -> None:
    from_list = documents_from(DOCS)
    from_ds = documents_from(datasets.Dataset.from_list([{**d, "id": str(d["id"])} for d in DOCS]))
    assert [d.id for d in from_list] == ["lamp", "7"]  # ids become strings, as in JSONL
    assert from_list[0].metadata == {"v": 1} and from_list[1].title == ""
    assert [(d.id, d.text, d.title) for d in from_ds] == [(d.id, d.text, d.title) for d in from_list]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ([{"id": "a", "body": "x"}], r"documents\[0\]: missing key 'text' \(keys given: body, id\)"),
        ([{"id": "a", "text": "  "}], r"documents\[0\]: 'text' must be a non-empty string"),
        ([DOCS[0], "just text"], r"documents\[1\]: expected a dict with id and text; got str"),
        (DOCS[0], r"documents: got one dict; pass a list of dicts"),
        (42, r"documents: expected a list of dicts, a datasets.Dataset or a file path; got int"),
        ([{"id": "a", "text": "x", "metadata": "v1"}], r"documents\[0\]: field 'metadata'"),
    ],
)
def test_documents_from_names_the_problem(bad: object, message: str) -> None:
    with pytest.raises(DataError, match=message):
        documents_from(bad)  # type: ignore[arg-type]


def test_index_upserts_dicts_and_searches_them(config) -> None:
    from ragtune import Index

    with Index.from_config(config) as index:
        report = index.upsert(DOCS, progress=False)
        assert sorted(report.added) == ["7", "lamp"]
        hits = index.search("battery hours", 1)
        assert hits[0].chunk.doc_id == "lamp"
        same = datasets.Dataset.from_list([{**d, "id": str(d["id"])} for d in DOCS])
        assert sorted(index.upsert(same, progress=False).unchanged) == ["7", "lamp"]
        with pytest.raises(DataError, match=r"documents\[0\]: missing key 'id'"):
            index.upsert([{"text": "no id"}])
        with pytest.raises(DataError, match="not one string"):
            index.delete("lamp")


def test_examples_from_all_three_shapes_and_a_dataset() -> None:
    rows = [
        {"question": "Q1?", "answer": "A1.", "doc_id": 3},
        {"instruction": "Q2?", "output": "A2."},
        {"messages": [{"role": "user", "content": "Q3?"}, {"role": "assistant", "content": "A3."}]},
    ]
    got = examples_from(rows)
    assert [(e.question, e.answer) for e in got] == [("Q1?", "A1."), ("Q2?", "A2."), ("Q3?", "A3.")]
    assert got[0].group == "3"
    from_ds = examples_from(datasets.Dataset.from_list(rows[:1] * 2))
    assert [e.answer for e in from_ds] == ["A1.", "A1."]


def test_examples_from_names_the_problem() -> None:
    with pytest.raises(DataError, match=r"examples\[1\]: answer missing"):
        examples_from([{"question": "Q?", "answer": "A."}, {"question": "Q2?"}])
    with pytest.raises(DataError, match=r"examples: no training examples given"):
        examples_from([])
    splits = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list([{"question": "q", "answer": "a"}]),
            "test": datasets.Dataset.from_list([]),
        }
    )
    with pytest.raises(DataError, match=r"splits \['train', 'test'\]; pass one of them"):
        examples_from(splits)


def test_items_from_dicts_and_a_dataset() -> None:
    items = items_from(QUESTIONS)
    assert [i.id for i in items] == ["q1", "2"]
    # a Dataset fills the column the second row lacks with None: read as absent, not as a bad value
    from_ds = items_from(datasets.Dataset.from_list(QUESTIONS))
    assert [(i.id, i.answers, i.doc_ids) for i in from_ds] == [(i.id, i.answers, i.doc_ids) for i in items]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ([{"id": "a", "question": "Q?"}], r"questions\[0\]: Value error, answers: give at least one answer"),
        (
            [{"id": "a", "question": "Q?", "answers": "x"}],
            r"questions\[0\]: field 'answers': Input should be a valid list",
        ),
        ([{"question": "Q?", "answers": ["x"]}], r"questions\[0\]: field 'id': Field required"),
        ([QUESTIONS[0], QUESTIONS[0]], r"questions\[1\]: duplicate id 'q1'"),
        (["Q?"], r"questions\[0\]: expected a dict with id, question and answers; got str"),
    ],
)
def test_items_from_names_the_problem(bad: object, message: str) -> None:
    with pytest.raises(DataError, match=message):
        items_from(bad)  # type: ignore[arg-type]


def test_api_checks_inputs_before_loading_a_model(config, tmp_path: Path) -> None:
    """Bad data or a bad name fails at once: no generator is built (it would take seconds)."""
    with pytest.raises(DataError, match=r"questions\[0\]: field 'id'"):
        ragtune.evaluate([{"question": "Q?", "answers": ["a"]}], config)
    with pytest.raises(ConfigError, match="adapter name"):
        ragtune.train_adapter([{"question": "Q?", "answer": "A."}], "../escape", config)
    with pytest.raises(DataError, match=r"examples\[0\]: answer missing"):
        ragtune.train_adapter([{"question": "Q?"}], "ok", config)
    with pytest.raises(ConfigError, match="verdict needs examples, documents"):
        ragtune.verdict(config, questions=QUESTIONS)
    with pytest.raises(DataError, match=r"update\[0\]: missing key 'text'"):
        ragtune.verdict(
            config,
            questions=QUESTIONS,
            examples=[{"question": "Q?", "answer": "A."}],
            documents=DOCS,
            update=[{"id": "lamp"}],
            update_questions=QUESTIONS,
            out=tmp_path,
        )


def test_evaluate_runs_arms_on_in_memory_questions(generator, tmp_path: Path) -> None:
    from ragtune import Index, Pipeline, load_config

    cfg = load_config(workspace=tmp_path / "ws", environ={}, overrides={"generation": {"max_new_tokens": 12}})
    index = Index.from_config(cfg)
    index.upsert(DOCS, progress=False)
    pipeline = Pipeline(cfg, generator, index)
    run = ragtune.evaluate(
        datasets.Dataset.from_list(QUESTIONS[:1]), pipeline=pipeline, arms=["rag"], out=tmp_path / "ev"
    )
    # the harness adds its trivial baselines beside the arms asked for
    assert [r.id for r in run.records if r.arm == "rag"] == ["q1"]
    assert run.summary["rag"]["hit_at_k"] == 1.0  # the battery question finds the battery document
    assert run.json_path.is_file() and run.md_path.is_file()
    with pytest.raises(ConfigError, match="not both"):
        ragtune.evaluate(QUESTIONS, cfg.model_copy(), pipeline=pipeline)
