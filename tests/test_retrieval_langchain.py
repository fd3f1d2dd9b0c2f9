"""LangChain interop inside a real LCEL chain; approximate index types; MMR diversity."""

from pathlib import Path

import pytest
from langchain_core.documents import Document as LCDocument
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableLambda, RunnablePassthrough

from ragtune.core.config import RetrievalConfig
from ragtune.core.errors import DataError
from ragtune.core.types import Document
from ragtune.retrieval.index import Index
from ragtune.retrieval.langchain_retriever import from_langchain, to_langchain


def test_retriever_in_an_lcel_chain(tmp_path: Path, fact_docs, open_index):
    ix = open_index(tmp_path / "ix")
    ix.upsert(fact_docs, progress=False)
    retriever = ix.as_langchain_retriever(k=1, mode="hybrid")
    assert isinstance(retriever, BaseRetriever)
    docs = retriever.invoke("how long does the battery last")
    assert docs[0].metadata["doc_id"] == "zorblat-battery" and docs[0].metadata["rank"] == 1
    prompt = ChatPromptTemplate.from_template("Context:\n{context}\n\nQuestion: {question}")
    chain = (
        {
            "context": retriever | RunnableLambda(lambda ds: "\n".join(d.page_content for d in ds)),
            "question": RunnablePassthrough(),
        }
        | prompt
        | RunnableLambda(lambda p: p.to_string())
    )
    outs = chain.batch(["how long does the battery last", "which colours does the lamp come in"])
    assert "31 hours" in outs[0] and "mauve" in outs[1]
    filtered = ix.as_langchain_retriever(k=3, filters={"doc_id": "zorblat-hours"}).invoke("battery")
    assert [d.metadata["doc_id"] for d in filtered] == ["zorblat-hours"]


def test_document_conversion_both_ways():
    ours = Document(id="a", title="Alpha", text="Alpha text.", metadata={"tags": ["x"]})
    theirs = to_langchain(ours)
    assert isinstance(theirs, LCDocument) and theirs.id == "a" and theirs.metadata["title"] == "Alpha"
    assert from_langchain(theirs) == ours
    assert from_langchain(LCDocument(page_content="t", metadata={"source": "f.txt"})).id == "f.txt"
    with pytest.raises(DataError, match="needs an id"):
        from_langchain(LCDocument(page_content="no id"))


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_index_types_follow_updates(tmp_path: Path, fact_docs, kind: str):
    cfg = RetrievalConfig(index_type=kind, hnsw_m=8, ivf_nlist=4)
    ix = Index(tmp_path / kind, cfg)
    ix.upsert(fact_docs, progress=False)
    assert ix.search("how long does the battery last", k=1)[0].chunk.doc_id == "zorblat-battery"
    ix.upsert([fact_docs[3].model_copy(update={"text": "A Zorblat lamp battery now lasts 40 hours."})], progress=False)
    ix.delete(["zorblat-colours"])
    assert ix.vector_count == 3
    assert "40 hours" in ix.search("battery life", k=1)[0].chunk.text
    assert ix.search("support hours", k=3, filters={"doc_id": "zorblat-hours"})[0].chunk.doc_id == "zorblat-hours"
    reopened = Index(tmp_path / kind, cfg)
    assert reopened.vector_count == 3 and "40 hours" in reopened.search("battery life", k=1)[0].chunk.text


def test_mmr_trades_duplicates_for_diversity(tmp_path: Path, open_index):
    docs = [
        Document(id="b1", text="The Zorblat lamp battery lasts 31 hours."),
        Document(id="b2", text="The Zorblat lamp battery lasts 31 hours on one charge."),
        Document(id="c1", text="Charging the Zorblat lamp takes 90 minutes with the cable."),
    ]
    plain = open_index(tmp_path / "ix")
    plain.upsert(docs, progress=False)
    assert {h.chunk.doc_id for h in plain.search("Zorblat lamp battery hours", k=2)} == {"b1", "b2"}
    diverse = open_index(tmp_path / "ix", RetrievalConfig(mmr=True, mmr_lambda=0.3))
    assert "c1" in {h.chunk.doc_id for h in diverse.search("Zorblat lamp battery hours", k=2)}
