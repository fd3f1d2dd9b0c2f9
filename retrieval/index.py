"""The index a workspace holds: upsert/delete documents and dense search, one snapshot per commit.

Commit order makes a crash harmless: vectors and rows go into one SQLite transaction; the FAISS
file for the new snapshot is written (temp file + rename) before that transaction commits, and on
open a FAISS file that does not match SQLite's snapshot is rebuilt from the stored vectors.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from tqdm.auto import tqdm

from ragtune.core.config import RetrievalConfig
from ragtune.core.errors import DataError
from ragtune.core.models import load_embedder
from ragtune.core.types import Chunk, Document, Hit
from ragtune.retrieval.chunker import Chunker
from ragtune.retrieval.store import Store


@dataclass
class IngestReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    chunks_written: int = 0
    snapshot: str | None = None

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.deleted)

    def summary(self) -> str:
        return (
            f"{len(self.added)} added, {len(self.updated)} updated, {len(self.unchanged)} unchanged, "
            f"{len(self.deleted)} deleted; {self.chunks_written} chunks embedded; snapshot {self.snapshot}"
        )


def content_hash(doc: Document) -> str:
    blob = "\x1f".join([doc.title, doc.text, repr(sorted(doc.metadata.items()))])
    return hashlib.sha256(blob.encode()).hexdigest()


class Index:
    def __init__(self, path: Path, config: RetrievalConfig | None = None, embedder: str = "bundled:all-minilm-l6-v2"):
        self.path = Path(path)
        self.config = config or RetrievalConfig()
        self.embedder_ref = embedder
        self.path.mkdir(parents=True, exist_ok=True)
        self.store = Store(self.path / "store.sqlite")
        self._model: Any = None
        self._chunker: Chunker | None = None
        self.faiss = self._open_faiss()

    # models (lazy: opening an index to list snapshots should not load a model) ------------------
    @property
    def model(self) -> Any:
        if self._model is None:
            self._model = load_embedder(self.embedder_ref)
        return self._model

    @property
    def dim(self) -> int:
        stored = self.store.get_meta("dim")
        return int(stored) if stored else int(self.model.get_embedding_dimension())

    @property
    def chunker(self) -> Chunker:
        if self._chunker is None:
            self._chunker = Chunker(self.model.tokenizer, self.config.chunk_tokens, self.config.chunk_overlap)
        return self._chunker

    def embed(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        vecs = self.model.encode(
            list(texts),
            batch_size=self.config.embed_batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=progress,
        )
        return np.asarray(vecs, dtype=np.float32)

    # FAISS file ---------------------------------------------------------------------------------
    @property
    def snapshot(self) -> str | None:
        return self.store.get_meta("snapshot")

    def _faiss_file(self, snapshot: str) -> Path:
        return self.path / f"vectors-{snapshot}.faiss"

    def _open_faiss(self) -> Any:
        snap = self.snapshot
        if snap is None:
            return None
        f = self._faiss_file(snap)
        n_chunks = self.store.counts()[1]
        if f.is_file():
            try:
                index = faiss.read_index(str(f))
                if index.ntotal == n_chunks:
                    self._clean_faiss_files(keep=snap)
                    return index
            except RuntimeError:
                pass
        # missing, truncated or behind SQLite: rebuild from the stored vectors
        index = self._build_faiss(*self.store.all_vectors(int(self.store.get_meta("dim") or 384)))
        self._write_faiss(index, snap)
        self._clean_faiss_files(keep=snap)
        return index

    def _build_faiss(self, ids: np.ndarray, vecs: np.ndarray) -> Any:
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(vecs.shape[1] if len(vecs) else self.dim))
        if len(ids):
            index.add_with_ids(vecs, ids)
        return index

    def _write_faiss(self, index: Any, snapshot: str) -> None:
        target = self._faiss_file(snapshot)
        tmp = target.with_suffix(".tmp")
        faiss.write_index(index, str(tmp))
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)

    def _clean_faiss_files(self, keep: str) -> None:
        for f in self.path.glob("vectors-*.faiss"):
            if f.name != self._faiss_file(keep).name:
                f.unlink(missing_ok=True)
        for f in self.path.glob("vectors-*.tmp"):
            f.unlink(missing_ok=True)

    # writes -------------------------------------------------------------------------------------
    def upsert(self, docs: Iterable[Document], progress: bool = True) -> IngestReport:
        """Add new documents, replace changed ones, skip unchanged ones; one commit, one snapshot."""
        return self._commit(list(docs), [], progress)

    def delete(self, doc_ids: Iterable[str]) -> IngestReport:
        ids = list(doc_ids)
        known = self.store.content_hashes()
        missing = [d for d in ids if d not in known]
        if missing:
            raise DataError(f"unknown document ids: {', '.join(missing[:5])}")
        return self._commit([], ids, progress=False)

    def _commit(self, docs: list[Document], delete_ids: list[str], progress: bool) -> IngestReport:
        report = IngestReport(snapshot=self.snapshot)
        known = self.store.content_hashes()
        todo: list[tuple[Document, str]] = []
        for doc in docs:
            h = content_hash(doc)
            if known.get(doc.id) == h:
                report.unchanged.append(doc.id)
            else:
                (report.updated if doc.id in known else report.added).append(doc.id)
                todo.append((doc, h))
        report.deleted = list(delete_ids)
        if not report.changed:
            return report

        pieces: list[tuple[Document, int, str]] = []
        for doc, _ in tqdm(todo, desc="chunking", disable=not progress or len(todo) < 2, leave=False):
            parts = self.chunker.split(doc)
            if not parts:
                raise DataError(f"document '{doc.id}' has no text to index")
            pieces.extend((doc, i, p) for i, p in enumerate(parts))
        vectors = self.embed([f"{d.title}\n{p}" if d.title else p for d, _, p in pieces], progress=progress)

        replaced = report.updated + report.deleted
        old_ids = np.array(self.store.chunk_ids_of(replaced), dtype=np.int64)
        new_index = self._build_faiss(*self.store.all_vectors(self.dim)) if self.faiss is None else self.faiss
        self.store.begin()
        try:
            self.store.set_meta("dim", str(vectors.shape[1] if len(vectors) else self.dim))
            self.store.delete_documents(replaced)
            next_id = self.store.next_chunk_id()
            new_ids = np.arange(next_id, next_id + len(pieces), dtype=np.int64)
            for doc, h in todo:
                self.store.put_document(doc.id, doc.title, h, doc.metadata)
            for cid, (doc, pos, text), vec in zip(new_ids.tolist(), pieces, vectors, strict=True):
                chunk = Chunk(id=cid, doc_id=doc.id, position=pos, text=text, title=doc.title, metadata=doc.metadata)
                self.store.put_chunk(chunk, vec)
            self.store.set_meta("next_chunk_id", str(next_id + len(pieces)))
            seq = int(self.store.get_meta("seq", "0") or 0) + 1
            digest = hashlib.sha256(repr(sorted(self.store.content_hashes().items())).encode()).hexdigest()[:8]
            snapshot = f"s{seq:05d}-{digest}"
            self.store.set_meta("seq", str(seq))
            self.store.set_meta("snapshot", snapshot)
            self.store.add_snapshot(snapshot, seq)
            if len(old_ids):
                new_index.remove_ids(old_ids)
            if len(new_ids):
                new_index.add_with_ids(vectors, new_ids)
            self._write_faiss(new_index, snapshot)
            self.store.commit()
        except BaseException:
            self.store.rollback()
            self.faiss = self._open_faiss()  # the in-memory index may hold half a change
            raise
        self.faiss = new_index
        self._clean_faiss_files(keep=snapshot)
        report.chunks_written = len(pieces)
        report.snapshot = snapshot
        return report

    # reads --------------------------------------------------------------------------------------
    def search(self, query: str, k: int | None = None) -> list[Hit]:
        return self.search_many([query], k)[0]

    def search_many(self, queries: Sequence[str], k: int | None = None) -> list[list[Hit]]:
        k = k or self.config.top_k
        if self.faiss is None or self.faiss.ntotal == 0:
            return [[] for _ in queries]
        scores, ids = self.faiss.search(self.embed(queries), min(k, self.faiss.ntotal))
        chunks = self.store.chunks(sorted({int(i) for i in ids.ravel() if i >= 0}))
        out: list[list[Hit]] = []
        for row_s, row_i in zip(scores, ids, strict=True):
            hits = [
                Hit(chunk=chunks[int(i)], score=float(s), rank=r)
                for r, (s, i) in enumerate(zip(row_s, row_i, strict=True), 1)
                if i >= 0 and int(i) in chunks
            ]
            out.append(hits)
        return out

    def stats(self) -> dict[str, Any]:
        docs, chunks = self.store.counts()
        return {"snapshot": self.snapshot, "documents": docs, "chunks": chunks, "embedder": self.embedder_ref}

    def document(self, doc_id: str) -> dict[str, Any] | None:
        return self.store.document(doc_id)

    def close(self) -> None:
        self.store.close()
