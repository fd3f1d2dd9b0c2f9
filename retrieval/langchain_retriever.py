"""LangChain interop: the index as a `BaseRetriever` for LCEL chains, and `Document` conversion both ways."""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document as LCDocument
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict

from ragtune.core.types import Document, Hit


def hit_to_langchain(hit: Hit) -> LCDocument:
    """A hit as LangChain sees a retrieved passage; ids, score and rank travel in the metadata."""
    c = hit.chunk
    meta = {**c.metadata, "doc_id": c.doc_id, "chunk_id": c.id, "title": c.title, "score": hit.score, "rank": hit.rank}
    return LCDocument(page_content=c.text, metadata=meta, id=str(c.id))


def to_langchain(doc: Document) -> LCDocument:
    return LCDocument(page_content=doc.text, metadata={**doc.metadata, "title": doc.title}, id=doc.id)


def from_langchain(doc: LCDocument, doc_id: str | None = None) -> Document:
    """A LangChain document to ours: the id comes from `doc_id`, `doc.id`, or `metadata['id']`."""
    meta = dict(doc.metadata)
    ident = doc_id or doc.id or meta.pop("id", None) or meta.get("source")
    if not ident:
        from ragtune.core.errors import DataError

        raise DataError("a LangChain document needs an id (Document.id, metadata['id'] or metadata['source'])")
    title = str(meta.pop("title", ""))
    return Document(id=str(ident), text=doc.page_content, title=title, metadata=meta)


class IndexRetriever(BaseRetriever):
    """Search a ragtune `Index` from LangChain; `k`, `mode`, `filters` and `snapshot` as in `Index.search`."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    index: Any
    k: int | None = None
    mode: str | None = None
    filters: dict[str, Any] | None = None
    snapshot: str | None = None

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[LCDocument]:
        hits = self.index.search(query, self.k, mode=self.mode, filters=self.filters, snapshot=self.snapshot)
        return [hit_to_langchain(h) for h in hits]
