"""Documents -> chunks -> embeddings -> FAISS + SQLite; search."""

from ragtune.retrieval.index import Index, IngestReport
from ragtune.retrieval.loaders import load_documents

__all__ = ["Index", "IngestReport", "load_documents"]
