"""Dataset loaders on the shared datasets (read in place; skipped when the folder is absent)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragtune.core.errors import DataError
from ragtune.eval.harness.loaders import load_cmu_qa, load_eval_set, load_hotpotqa, load_scifact, seeded_sample

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def _need(name: str) -> Path:
    path = SHARED / name
    if not path.exists():
        pytest.skip(f"{path} not available")
    return path


def test_cmu_qa_split_by_article_with_gold_documents():
    s = load_cmu_qa(_need("cmu_qa"), test_fraction=0.3, seed=0)
    test_docs = {d for it in s.items for d in it.doc_ids}
    train_docs = {d for it in s.train for d in it.doc_ids}
    assert test_docs and train_docs and not test_docs & train_docs  # no article on both sides
    doc_ids = {d.id for d in s.documents}
    assert test_docs | train_docs <= doc_ids and len(doc_ids) == len(s.documents)
    assert 100 <= len(s.documents) <= 200  # README: about 150 articles
    n = len(s.items) + len(s.train)
    assert 1500 <= n <= 2500  # README: about 2,200 unique answered question/article pairs
    assert 0.15 <= len(test_docs) / len(doc_ids) <= 0.45
    assert all(it.answers and len(it.doc_ids) == 1 for it in s.items + s.train)
    assert len({it.id for it in s.items + s.train}) == n
    yes_no = sum(it.answers[0] in ("Yes", "No") for it in s.items + s.train) / n
    assert 0.25 <= yes_no <= 0.55  # README: about 40% yes/no
    everything = [t for it in s.items + s.train for t in (it.question, *it.answers)]
    assert not [t for t in everything if "Ã" in t or "\x93" in t]  # mixed encodings decoded per field
    assert any("Angoulême" in t for t in everything)
    again = load_cmu_qa(_need("cmu_qa"), test_fraction=0.3, seed=0)
    assert [it.id for it in again.items] == [it.id for it in s.items]  # seeded
    other = load_cmu_qa(_need("cmu_qa"), test_fraction=0.3, seed=1)
    assert {d for it in other.items for d in it.doc_ids} != test_docs
    train_view = load_eval_set("cmu_qa", _need("cmu_qa"), "train", seed=0)
    assert [it.id for it in train_view.items] == [it.id for it in s.train]


def test_scifact_is_retrieval_only_with_qrels():
    s = load_scifact(_need("scifact_beir"), "test")
    assert len(s.items) == 300 and len(s.documents) == 5183  # README: 300 test claims, 5,183 abstracts
    assert all(not it.answers and it.doc_ids for it in s.items)
    assert sum(len(it.doc_ids) for it in s.items) == 339  # README: 339 judgments
    ids = {d.id for d in s.documents}
    assert all(set(it.doc_ids) <= ids for it in s.items)


def test_hotpotqa_sample_paragraphs_become_documents():
    s = load_hotpotqa(_need("hotpotqa_sample100"))
    assert len(s.items) == 100
    titles = {d.id for d in s.documents}
    assert all(it.answers and 1 <= len(it.doc_ids) <= 4 and set(it.doc_ids) <= titles for it in s.items)
    first = s.items[0]
    assert "VIVA Media" in first.doc_ids and first.answers == ["Gesellschaft mit beschränkter Haftung"]


def test_generic_jsonl_and_errors(tmp_path: Path):
    f = tmp_path / "qa.jsonl"
    rows = [{"id": i, "question": f"q{i}?", "answers": [f"a{i}"], "doc_ids": ["d"]} for i in range(10)]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    s = load_eval_set("jsonl", f)
    assert [it.id for it in s.items] == [str(i) for i in range(10)] and s.items[3].doc_ids == ["d"]
    picked = seeded_sample(s.items, 4, seed=0)
    assert len(picked) == 4 and picked == sorted(picked, key=lambda it: int(it.id))  # set order kept
    assert seeded_sample(s.items, 4, seed=0) == picked and seeded_sample(s.items, None) == s.items
    with pytest.raises(DataError, match="unknown dataset kind"):
        load_eval_set("squad", f)
    with pytest.raises(DataError, match="not found"):
        load_cmu_qa(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no CMU-QA articles"):
        load_cmu_qa(tmp_path / "empty")
