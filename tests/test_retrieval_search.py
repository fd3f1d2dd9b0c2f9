"""Search modes, filters, snapshot pinning and the document lifecycle on a handful of tiny documents,
on both index backends (`open_index`: embedded SQLite + FAISS, PostgreSQL + pgvector)."""

from pathlib import Path

import pytest

from ragtune.core.config import RetrievalConfig
from ragtune.core.errors import DataError, NotFoundError
from ragtune.core.types import Document
from ragtune.retrieval.index import SnapshotNotFoundError
from ragtune.retrieval.store import filter_sql, fts_query


def _tagged(fact_docs: list[Document]) -> list[Document]:
    tags = {"zorblat-pricing": ["sales"], "zorblat-hours": ["support"], "zorblat-battery": ["support", "hardware"]}
    return [
        d.model_copy(update={"metadata": {"tags": tags.get(d.id, ["hardware"]), "lang": "en", "rev": i}})
        for i, d in enumerate(fact_docs)
    ]


def test_three_modes_find_the_fact(tmp_path: Path, fact_docs, open_index):
    ix = open_index(tmp_path / "ix")
    ix.upsert(fact_docs, progress=False)
    for mode in ("dense", "lexical", "hybrid"):
        hits = ix.search("hotline phone number for support", k=2, mode=mode)
        assert hits and hits[0].chunk.doc_id == "zorblat-hours", mode
        assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
    # lexical matches stemmed words and ignores FTS5 syntax in the query
    assert ix.search('charging "NEAR( AND* -', k=1, mode="lexical")[0].chunk.doc_id == "zorblat-battery"
    assert ix.search("the of and", k=3, mode="lexical") == []
    with pytest.raises(DataError, match="unknown search mode 'fuzzy'"):
        ix.search("x", mode="fuzzy")
    ix_cfg = open_index(tmp_path / "ix", RetrievalConfig(search_mode="lexical"))
    assert ix_cfg.search("mauve ochre", k=1)[0].chunk.doc_id == "zorblat-colours"


def test_hybrid_is_reciprocal_rank_fusion(tmp_path: Path, fact_docs, open_index):
    ix = open_index(tmp_path / "ix", RetrievalConfig(rrf_k=60))
    ix.upsert(fact_docs, progress=False)
    q = "battery charging minutes"
    dense = {h.chunk.id: h.rank for h in ix.search(q, k=4, mode="dense")}
    lexical = {h.chunk.id: h.rank for h in ix.search(q, k=4, mode="lexical")}
    hybrid = ix.search(q, k=4, mode="hybrid")
    for h in hybrid:
        expected = sum(1 / (60 + r[h.chunk.id]) for r in (dense, lexical) if h.chunk.id in r)
        assert h.score == pytest.approx(expected)
    assert [h.score for h in hybrid] == sorted((h.score for h in hybrid), reverse=True)


def test_metadata_filters(tmp_path: Path, fact_docs, open_index):
    ix = open_index(tmp_path / "ix")
    ix.upsert(_tagged(fact_docs), progress=False)
    q = "how long does the battery last"
    for mode in ("dense", "lexical", "hybrid"):
        hits = ix.search(q, k=4, mode=mode, filters={"tags": "support"})
        assert {h.chunk.doc_id for h in hits} <= {"zorblat-hours", "zorblat-battery"}, mode
    assert {h.chunk.doc_id for h in ix.search(q, k=4, filters={"tags": ["sales", "hardware"]})} == {
        "zorblat-pricing",
        "zorblat-battery",
        "zorblat-colours",
    }
    assert [h.chunk.doc_id for h in ix.search(q, k=4, filters={"rev": {"$gte": 3}})] == ["zorblat-battery"]
    assert ix.search(q, k=4, filters={"doc_id": "zorblat-hours"})[0].chunk.doc_id == "zorblat-hours"
    assert ix.search(q, k=4, filters={"tags": {"$nin": ["support", "hardware"]}})[0].chunk.doc_id == "zorblat-pricing"
    assert ix.search(q, k=4, filters={"lang": "fr"}) == []
    with pytest.raises(DataError, match="filter key"):
        filter_sql({"bad key'": 1})
    with pytest.raises(DataError, match="unknown operator"):
        ix.search(q, filters={"rev": {"$regex": "x"}})


def test_lifecycle_ids_never_reused_and_vectors_reused(tmp_path: Path, fact_docs, open_index):
    ix = open_index(tmp_path / "ix")
    ix.upsert(fact_docs, progress=False)
    max_before = max(ix.store.chunk_ids_of([d.id for d in fact_docs]))
    ix.delete(["zorblat-battery"])
    rep = ix.upsert([fact_docs[3]], progress=False)  # the same text comes back: no embedding work
    assert rep.added == ["zorblat-battery"] and rep.vectors_reused == rep.chunks_written == 1
    assert min(ix.store.chunk_ids_of(["zorblat-battery"])) > max_before
    assert ix.get_document("zorblat-battery").text == fact_docs[3].text
    with pytest.raises(NotFoundError, match="nope"):
        ix.get_document("nope")
    # one batch: an upsert and a delete in the same commit
    edited = fact_docs[0].model_copy(update={"text": "The Zorblat Basic plan now costs 19 florins."})
    rep = ix.apply([edited], ["zorblat-colours"], progress=False)
    assert rep.updated == ["zorblat-pricing"] and rep.deleted == ["zorblat-colours"]
    assert ix.document_ids() == ["zorblat-battery", "zorblat-hours", "zorblat-pricing"]
    assert ix.search("florins", k=1, mode="lexical")[0].chunk.text.startswith("The Zorblat Basic plan now")
    assert all(h.chunk.doc_id != "zorblat-colours" for h in ix.search("mauve lamp colours", k=3, mode="hybrid"))
    with pytest.raises(DataError, match="twice"):
        ix.apply([edited, edited], [])
    with pytest.raises(DataError, match="both upserted and deleted"):
        ix.apply([edited], ["zorblat-pricing"])


def test_snapshot_pinning_and_retention(tmp_path: Path, fact_docs, open_index):
    ix = open_index(tmp_path / "ix", RetrievalConfig(keep_snapshots=3))
    first = ix.upsert(fact_docs, progress=False).snapshot
    edited = fact_docs[1].model_copy(update={"text": "Zorblat support now answers on Fridays only."})
    second = ix.upsert([edited], progress=False).snapshot
    ix.delete(["zorblat-colours"])
    q = "which day does support answer"
    for mode in ("dense", "lexical", "hybrid"):
        old = ix.search(q, k=4, mode=mode, snapshot=first)
        assert "Wednesdays" in next(h.chunk.text for h in old if h.chunk.doc_id == "zorblat-hours"), mode
        assert any(h.chunk.doc_id == "zorblat-colours" for h in old) or mode == "lexical"
        now = ix.search(q, k=4, mode=mode)
        assert "Fridays" in next(h.chunk.text for h in now if h.chunk.doc_id == "zorblat-hours"), mode
    assert ix.search("mauve ochre slate", k=1, mode="lexical", snapshot=second)[0].chunk.doc_id == "zorblat-colours"
    assert ix.search("mauve ochre slate", k=3, mode="lexical") == []
    # pinned + filtered, and a reopened index sees the same history
    ix2 = open_index(tmp_path / "ix", RetrievalConfig(keep_snapshots=3))
    pinned = ix2.search(q, k=4, snapshot=first, filters={"doc_id": "zorblat-hours"})
    assert len(pinned) == 1 and "Wednesdays" in pinned[0].chunk.text
    # only the last 3 snapshots stay queryable, and their retired chunks are gone from SQLite
    ix2.upsert([edited.model_copy(update={"text": "Support answers on Mondays."})], progress=False)
    assert [s["id"] for s in ix2.snapshots()][0] == second
    with pytest.raises(SnapshotNotFoundError, match=f"unknown snapshot '{first}'") as err:
        ix2.search(q, snapshot=first)
    assert isinstance(err.value, NotFoundError)
    with pytest.raises(SnapshotNotFoundError, match="s99999-x"):
        ix2.search_many([q], snapshot="s99999-x")
    assert ix2.store.counts()[1] == ix2.vector_count == 3


def test_chunking_strategies_keep_titles(tmp_path: Path, open_index):
    md = "# Guide\n\nIntro text.\n\n## Setup\n\nPlug the lamp in.\n\n## Care\n\nWipe with a dry cloth."
    doc = Document(id="guide", title="Lamp Guide", text=md)
    ix = open_index(tmp_path / "md", RetrievalConfig(chunking="markdown"))
    ix.upsert([doc], progress=False)
    chunks = list(ix.store.chunks(ix.store.chunk_ids_of(["guide"])).values())
    assert {c.metadata["section"] for c in chunks} == {"Guide", "Guide > Setup", "Guide > Care"}
    assert all(c.title == "Lamp Guide" for c in chunks)
    assert ix.search("cleaning with a cloth", k=1)[0].chunk.metadata["section"] == "Guide > Care"

    long = Document(id="long", title="Long", text=" ".join(f"word{i}" for i in range(300)))
    fx = open_index(tmp_path / "fx", RetrievalConfig(chunking="fixed", chunk_tokens=64, chunk_overlap=16))
    fx.upsert([long], progress=False)
    parts = [c.text for c in sorted(fx.store.chunks(fx.store.chunk_ids_of(["long"])).values(), key=lambda c: c.id)]
    tok = fx.model.tokenizer
    assert len(parts) > 3 and all(len(tok(p, add_special_tokens=False)["input_ids"]) <= 64 for p in parts)
    assert parts[0].split()[-1] in parts[1]  # windows overlap
    assert all(c.title == "Long" for c in fx.store.chunks(fx.store.chunk_ids_of(["long"])).values())


def test_fts_query_escapes_syntax():
    assert fts_query('What "is" NEAR(a b)* OR -x') == '"near" OR "b" OR "x"'
