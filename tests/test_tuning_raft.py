"""RAFT examples from a real index: gold kept with probability p, negatives are real retrieval results,
answers cite their source, snapshots pinned; the snapshot drift check serving calls."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragtune.core.adapters import AdapterCard
from ragtune.core.config import load_config
from ragtune.core.errors import DataError
from ragtune.core.types import Document
from ragtune.retrieval.drift import snapshot_drift, warn_if_drifted
from ragtune.retrieval.index import Index
from ragtune.tuning.data import Example
from ragtune.tuning.raft import RaftReport, RaftSettings, build_raft_examples

EXTRA = [
    ("zorblat-warranty", "Zorblat Warranty", "Every Zorblat lamp has a warranty of 4 years. Repairs are free."),
    ("zorblat-shipping", "Zorblat Shipping", "Zorblat ships to 12 countries. Delivery takes 6 days."),
]
QUESTIONS = [
    ("How much is the Zorblat Basic plan?", "17 florins a month.", "zorblat-pricing"),
    ("When does Zorblat support answer?", "On Wednesdays from 9 to 13.", "zorblat-hours"),
    ("Which colours does the Zorblat lamp come in?", "Mauve, ochre and slate.", "zorblat-colours"),
    ("How long does a Zorblat battery last?", "31 hours.", "zorblat-battery"),
    ("How long is the Zorblat warranty?", "4 years.", "zorblat-warranty"),
]


@pytest.fixture(scope="module")
def raft_index(tmp_path_factory: pytest.TempPathFactory, fact_docs: list[Document]) -> Index:
    cfg = load_config(workspace=tmp_path_factory.mktemp("raft-ws"), environ={})
    index = Index.from_config(cfg)
    index.upsert(fact_docs + [Document(id=i, title=t, text=x) for i, t, x in EXTRA], progress=False)
    return index


def _examples(n: int) -> list[Example]:
    rows = [QUESTIONS[i % len(QUESTIONS)] for i in range(n)]
    return [Example(question=f"{q} (case {i})", answer=a, doc_id=d) for i, (q, a, d) in enumerate(rows)]


def _retrieved(index: Index, examples: list[Example], k: int, gold: bool) -> list[list[str]]:
    """Per example, the texts the index ranks top among the gold document's (or the other documents') chunks."""
    out: list[list[str]] = [[] for _ in examples]
    for doc_id in {e.doc_id for e in examples}:
        rows = [i for i, e in enumerate(examples) if e.doc_id == doc_id]
        flt = {"doc_id": doc_id} if gold else {"doc_id": {"$ne": doc_id}}
        for i, hits in zip(rows, index.search_many([examples[i].question for i in rows], k, filters=flt), strict=True):
            out[i] = [h.chunk.text for h in hits]
    return out


def _gold_share(out: list[Example], index: Index) -> float:
    golds = _retrieved(index, out, 9, gold=True)
    return sum(any(c.text in g for c in e.context) for e, g in zip(out, golds, strict=True)) / len(out)


def test_gold_kept_with_probability_p_and_negatives_are_real_hits(raft_index: Index):
    examples = _examples(200)
    report = RaftReport()
    out = build_raft_examples(examples, raft_index, RaftSettings(k=3, p=0.8, seed=1), report=report)
    assert len(out) == 200 and report.built == 200 and report.snapshot == raft_index.snapshot
    golds, ranked = _retrieved(raft_index, out, 9, gold=True), _retrieved(raft_index, out, 3, gold=False)
    kept = [any(c.text in g for c in e.context) for e, g in zip(out, golds, strict=True)]
    assert sum(kept) == report.gold_kept
    assert 0.7 <= sum(kept) / len(kept) <= 0.9  # binomial(200, 0.8): sd 2.8 points
    titles = {d: raft_index.get_document(d).title for d in {str(e.doc_id) for e in out}}
    for ex, with_gold, gold, top in zip(out, kept, golds, ranked, strict=True):
        assert len(ex.context) == 3
        assert sum(c.text in gold for c in ex.context) == int(with_gold)
        negatives = [c.text for c in ex.context if c.text not in gold]
        assert sorted(negatives) == sorted(top[: 3 - with_gold])  # the retriever's top non-gold hits
        assert ex.answer.endswith("\nSources: " + titles[str(ex.doc_id)])
    again = build_raft_examples(examples, raft_index, RaftSettings(k=3, p=0.8, seed=1))
    assert again == out  # seeded
    assert (
        _gold_share(build_raft_examples(examples[:20], raft_index, RaftSettings(k=2, p=1.0, seed=0)), raft_index) == 1.0
    )
    assert (
        _gold_share(build_raft_examples(examples[:20], raft_index, RaftSettings(k=2, p=0.0, seed=0)), raft_index) == 0.0
    )


def test_raft_skips_rows_without_gold_and_errors(raft_index: Index):
    rows = [
        Example(question="How long is the Zorblat warranty?", answer="4 years.", doc_id="zorblat-warranty"),
        Example(question="No gold here?", answer="x"),
        Example(question="Gone?", answer="y", doc_id="not-indexed"),
    ]
    report = RaftReport()
    out = build_raft_examples(rows, raft_index, RaftSettings(k=2, p=1.0, seed=0, citation=None), report=report)
    assert [e.answer for e in out] == ["4 years."]
    assert (report.skipped_no_gold_doc, report.skipped_gold_not_indexed) == (1, 1)
    assert any("without a doc_id" in line for line in report.lines())
    with pytest.raises(DataError, match="doc_id"):
        build_raft_examples([Example(question="q", answer="a")], raft_index, RaftSettings(k=2, p=0.8, seed=0))
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        build_raft_examples(rows, raft_index, RaftSettings(k=2, p=1.5, seed=0))


def test_pinned_snapshot_and_drift_check(tmp_path: Path, fact_docs: list[Document]):
    cfg = load_config(workspace=tmp_path / "ws", environ={})
    index = Index.from_config(cfg)
    index.upsert(fact_docs, progress=False)
    old = index.snapshot
    ex = [Example(question="How long does a Zorblat battery last?", answer="31 hours.", doc_id="zorblat-battery")]
    card = AdapterCard(name="r", base_model="b", data_hash="h", n_train=1, n_val=0, snapshot=old)
    drift = snapshot_drift(card, index)
    assert drift is not None and not drift.far and drift.changed_share == 0.0
    assert snapshot_drift(card.model_copy(update={"snapshot": None}), index) is None

    index.upsert([Document(id="zorblat-battery", title="Zorblat Battery", text="The battery now lasts 44 hours.")])
    pinned = build_raft_examples(ex, index, RaftSettings(k=2, p=1.0, seed=0), snapshot=old)
    assert any("31 hours" in c.text for c in pinned[0].context)
    current = build_raft_examples(ex, index, RaftSettings(k=2, p=1.0, seed=0))
    assert any("44 hours" in c.text for c in current[0].context)
    drift = snapshot_drift(card, index, threshold=0.5)
    # one of four one-chunk documents replaced: Jaccard distance of the live chunk sets = 1 - 3/5
    assert drift is not None and drift.commits_since == 1 and drift.changed_share == pytest.approx(0.4)
    assert not drift.far
    with pytest.warns(UserWarning, match="re-training with --raft"):
        far = warn_if_drifted(card, index, threshold=0.3)
    assert far is not None and far.far


def test_tuning_cli_mistakes_are_clear_errors(tmp_path: Path):
    from typer.testing import CliRunner

    from ragtune.cli import app
    from ragtune.core.errors import NotFoundError, RagtuneError

    data = tmp_path / "t.jsonl"
    data.write_text('{"question": "q", "answer": "a", "doc_id": "d"}\n')
    ws = ["--workspace", str(tmp_path / "ws")]
    runner = CliRunner()
    r = runner.invoke(app, ["tune", "--data", str(data), "--name", "r", "--raft", *ws])
    assert isinstance(r.exception, DataError) and "run `ragtune ingest" in str(r.exception)
    r = runner.invoke(app, ["tune", "--name", "r", *ws])
    assert isinstance(r.exception, RagtuneError) and "--data is required" in str(r.exception)
    r = runner.invoke(app, ["adapters", "merge", "nope", *ws])
    assert isinstance(r.exception, NotFoundError) and "unknown adapter 'nope'" in str(r.exception)


def test_gold_chunk_is_the_one_holding_the_answer():
    from ragtune.core.types import Chunk, Hit
    from ragtune.tuning.raft import _gold_hit

    hits = [
        Hit(chunk=Chunk(id=i, doc_id="d", text=t), score=1.0 - i / 10, rank=i + 1)
        for i, t in enumerate(["No mention here, not at all.", "It was founded in 1832 by settlers."])
    ]
    assert _gold_hit(hits, "1832.").chunk.id == 1  # holds the answer, though ranked second
    assert _gold_hit(hits, "No").chunk.id == 0  # a yes/no answer: the best-ranked gold chunk
    assert _gold_hit([], "x") is None
