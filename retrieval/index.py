"""The index a workspace holds: document lifecycle, snapshots, and dense / lexical / hybrid search.

A commit is one SQLite transaction (rows, vectors, BM25 index, snapshot), so it is atomic and
durable on its own. The FAISS index is a cache of the stored vectors: it follows each commit in
memory, is written to `vectors-<snapshot>.faiss` only once enough has changed (`checkpoint_ratio`),
and on open (or when another process has committed) it is caught up from the rows added and removed
since the snapshot it matches, or rebuilt from the stored vectors if the file is missing or broken.
One writer at a time across processes (a file lock); readers use their own WAL read transaction
and are never blocked by it.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import filelock
import numpy as np

from ragtune.core.config import SEARCH_MODES, RetrievalConfig
from ragtune.core.errors import DataError, NotFoundError, RagtuneError
from ragtune.core.models import load_embedder
from ragtune.core.types import Chunk, Document, Hit
from ragtune.retrieval import vectors
from ragtune.retrieval.chunker import Chunker
from ragtune.retrieval.store import Store

_FILE_SEQ = re.compile(r"^vectors-s(\d+)-[0-9a-f]+\.faiss$")
# Removed chunks stay in the in-memory FAISS index as tombstones (skipped at search time) until this
# many pile up: removing from a flat index moves every vector after it (about 15 ms at 100k chunks),
# so one-document updates batch that cost instead of paying it on every commit.
MAX_TOMBSTONES = 128


class SnapshotNotFoundError(NotFoundError):
    """A pinned snapshot that never existed or is no longer kept."""


class IndexLockedError(RagtuneError):
    """Another process holds the index's writer lock for longer than `retrieval.lock_timeout`."""


@dataclass
class IngestReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    renamed: list[tuple[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    chunks_written: int = 0
    vectors_reused: int = 0
    snapshot: str | None = None

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.deleted)

    def summary(self) -> str:
        text = (
            f"{len(self.added)} added, {len(self.updated)} updated, {len(self.unchanged)} unchanged, "
            f"{len(self.deleted)} deleted"
        )
        if self.renamed:
            text += f", {len(self.renamed)} renamed"
        text += (
            f"; {self.chunks_written} chunks written ({self.vectors_reused} vectors reused); snapshot {self.snapshot}"
        )
        if self.errors:
            text += f"; {len(self.errors)} files skipped"
        return text


def content_hash(doc: Document) -> str:
    blob = "\x1f".join([doc.title, doc.text, repr(sorted(doc.metadata.items()))])
    return hashlib.sha256(blob.encode()).hexdigest()


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Index:
    def __init__(self, path: Path, config: RetrievalConfig | None = None, embedder: str = "bundled:all-minilm-l6-v2"):
        self.path = Path(path)
        self.config = config or RetrievalConfig()
        self.embedder_ref = embedder
        self.path.mkdir(parents=True, exist_ok=True)
        self.store = Store(self.path / "store.sqlite")
        self._lock = threading.RLock()
        self._writer = filelock.FileLock(str(self.path / "writer.lock"))
        self._model: Any = None
        self._chunker: Chunker | None = None
        self.faiss: Any = None
        self._faiss_seq = 0
        self._pending = 0  # chunks changed since the FAISS file on disk was written
        self._tombstones: set[int] = set()  # removed chunk ids still physically in self.faiss
        with self._lock, self.store.reading():
            self._load_faiss(self.store.seq())
        if self._should_checkpoint():
            self._try_checkpoint()

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
            c = self.config
            self._chunker = Chunker(self.model.tokenizer, c.chunk_tokens, c.chunk_overlap, c.chunking)
        return self._chunker

    def embed(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vecs = self.model.encode(
            list(texts),
            batch_size=self.config.embed_batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=progress,
        )
        return np.asarray(vecs, dtype=np.float32)

    # snapshots ----------------------------------------------------------------------------------
    @property
    def snapshot(self) -> str | None:
        return self.store.get_meta("snapshot")

    def snapshots(self) -> list[dict[str, Any]]:
        return self.store.snapshots()

    def _resolve(self, snapshot: str | None) -> int:
        if snapshot is None:
            return self.store.seq()
        seq = self.store.snapshot_seq(snapshot)
        if seq is None:
            kept = ", ".join(s["id"] for s in self.store.snapshots()) or "none"
            raise SnapshotNotFoundError(f"unknown snapshot '{snapshot}' (kept snapshots: {kept})")
        return seq

    # the FAISS cache ----------------------------------------------------------------------------
    def _faiss_file(self, snapshot: str) -> Path:
        return self.path / f"vectors-{snapshot}.faiss"

    def _faiss_files(self) -> list[tuple[int, Path]]:
        found = [(int(m.group(1)), f) for f in self.path.glob("vectors-*.faiss") if (m := _FILE_SEQ.match(f.name))]
        return sorted(found, reverse=True)

    def _load_faiss(self, seq: int) -> None:
        """Make `self.faiss` match `seq`: newest usable file + the delta since, or a rebuild from SQLite."""
        if seq == 0:
            self.faiss, self._faiss_seq, self._pending = None, 0, 0
            self._tombstones = set()
            return
        pruned = int(self.store.get_meta("pruned_upto", "0") or 0)
        for fseq, f in self._faiss_files():
            if fseq > seq or fseq < pruned:
                continue  # a crashed commit's file, or one whose delta is no longer known
            try:
                index = vectors.read(f)
            except RuntimeError:
                continue  # truncated or corrupt
            if index.ntotal != len(self.store.live_ids(fseq)):
                continue  # behind the rows it claims to match
            self.faiss, self._faiss_seq, self._pending = index, fseq, 0
            self._tombstones = set()
            self._catch_up(seq)
            return
        ids, vecs = self.store.live_vectors(self.dim, seq)
        self.faiss = vectors.build(self.config, vecs.shape[1] if len(vecs) else self.dim, ids, vecs)
        self._faiss_seq, self._pending = seq, max(1, len(ids))
        self._tombstones = set()

    def _catch_up(self, seq: int) -> None:
        """Apply the commits made since `self.faiss` was current (by this or another process)."""
        if self.faiss is None or self._faiss_seq == seq:
            if self.faiss is None and seq:
                self._load_faiss(seq)
            return
        if self._faiss_seq < int(self.store.get_meta("pruned_upto", "0") or 0) or self._faiss_seq > seq:
            self._load_faiss(seq)
            return
        removed, added = self.store.delta(self._faiss_seq, seq)
        self._apply(np.array(removed, dtype=np.int64), np.array(added, dtype=np.int64), None, seq)

    def _apply(self, removed: np.ndarray, added: np.ndarray, vecs: np.ndarray | None, seq: int) -> None:
        if self.faiss is None:
            ids, all_vecs = self.store.live_vectors(self.dim, seq)
            self.faiss = vectors.build(self.config, self.dim, ids, all_vecs)
            self._tombstones = set()
        else:
            self._tombstones.update(int(i) for i in removed)
            vectors.add(self.faiss, added, self.store.vectors(added.tolist(), self.dim) if vecs is None else vecs)
        self._faiss_seq = seq
        self._pending += len(removed) + len(added)
        if len(self._tombstones) > MAX_TOMBSTONES:
            self._compact()

    def _compact(self) -> None:
        """Physically drop the tombstoned vectors (before a checkpoint, or once enough piled up).

        HNSW cannot remove vectors, so it is rebuilt from the stored vectors of the chunks live at the
        snapshot it matches: tombstones make that happen once per `MAX_TOMBSTONES` removals, not per commit.
        """
        if self._tombstones and self.faiss is not None:
            if vectors.can_remove(self.faiss):
                vectors.remove(self.faiss, np.fromiter(self._tombstones, dtype=np.int64))
            else:
                ids, all_vecs = self.store.live_vectors(self.dim, self._faiss_seq)
                self.faiss = vectors.build(self.config, self.dim, ids, all_vecs)
        self._tombstones = set()

    @property
    def vector_count(self) -> int:
        """Live vectors in the FAISS cache (tombstones not counted); equals the live chunk count."""
        return 0 if self.faiss is None else int(self.faiss.ntotal) - len(self._tombstones)

    def checkpoint(self) -> None:
        """Write the FAISS file for the current snapshot (the caller holds the writer lock)."""
        with self._lock:
            snap = self.snapshot
            if self.faiss is None or snap is None or self._faiss_seq != self.store.seq():
                return
            self._compact()  # the file must hold exactly the chunks live at its snapshot
            vectors.write(self.faiss, self._faiss_file(snap))
            self.store.set_meta("faiss_seq", str(self._faiss_seq))
            self._pending = 0
            for _, f in self._faiss_files():
                if f.name != self._faiss_file(snap).name:
                    f.unlink(missing_ok=True)
            for f in self.path.glob("vectors-*.tmp"):
                f.unlink(missing_ok=True)

    def _should_checkpoint(self) -> bool:
        if self.faiss is None:
            return False
        return self._pending > self.config.checkpoint_ratio * max(1, self.vector_count) or not self._faiss_files()

    def _try_checkpoint(self) -> None:
        try:
            with self._writer.acquire(timeout=0):
                self.checkpoint()
        except filelock.Timeout:
            pass  # the writer will write it

    # writes -------------------------------------------------------------------------------------
    @contextmanager
    def _writing(self) -> Iterator[None]:
        try:
            self._writer.acquire(timeout=self.config.lock_timeout)
        except filelock.Timeout:
            raise IndexLockedError(
                f"index {self.path} is being written by another process (waited {self.config.lock_timeout:g} s; "
                "set retrieval.lock_timeout to wait longer)"
            ) from None
        try:
            yield
        finally:
            self._writer.release()

    def upsert(self, docs: Iterable[Document], progress: bool = True) -> IngestReport:
        """Add new documents, replace changed ones, skip unchanged ones; one commit, one snapshot."""
        return self.apply(list(docs), [], progress=progress)

    def delete(self, doc_ids: Iterable[str]) -> IngestReport:
        return self.apply([], list(doc_ids), progress=False)

    def apply(
        self,
        upserts: Sequence[Document],
        deletes: Sequence[str],
        progress: bool = True,
        on_commit: Callable[[Store], None] | None = None,
    ) -> IngestReport:
        """A batch of upserts and deletes as one atomic commit; `on_commit` adds writes to the same transaction."""
        seen: set[str] = set()
        for doc in upserts:
            if doc.id in seen:
                raise DataError(f"document id '{doc.id}' appears twice in one batch")
            seen.add(doc.id)
        both = seen & set(deletes)
        if both:
            raise DataError(f"documents both upserted and deleted in one batch: {', '.join(sorted(both)[:5])}")
        with self._writing():
            return self._commit(list(upserts), list(dict.fromkeys(deletes)), progress, on_commit)

    def _commit(
        self,
        docs: list[Document],
        delete_ids: list[str],
        progress: bool,
        on_commit: Callable[[Store], None] | None,
    ) -> IngestReport:
        with self._lock:
            known = self.store.content_hashes([*(d.id for d in docs), *delete_ids])
            report = IngestReport(snapshot=self.snapshot)
        missing = [d for d in delete_ids if d not in known]
        if missing:
            raise DataError(f"unknown document ids: {', '.join(missing[:5])}")
        todo: list[tuple[Document, str]] = []
        for doc in docs:
            h = content_hash(doc)
            if known.get(doc.id) == h:
                report.unchanged.append(doc.id)
            else:
                (report.updated if doc.id in known else report.added).append(doc.id)
                todo.append((doc, h))
        report.deleted = delete_ids
        if not report.changed:
            if on_commit is not None:  # bookkeeping only (e.g. a sync manifest): no new snapshot
                with self._lock:
                    self.store.begin()
                    try:
                        on_commit(self.store)
                        self.store.commit()
                    except BaseException:
                        self.store.rollback()
                        raise
            return report

        # chunk and embed outside any transaction and without the read lock: a failure writes nothing
        rows: list[tuple[Document, int, str, str, str]] = []  # doc, position, text, section, text hash
        for (doc, _), pieces in zip(todo, self.chunker.pieces_many([d for d, _ in todo]), strict=True):
            if not pieces:
                raise DataError(f"document '{doc.id}' has no text to index")
            for pos, p in enumerate(pieces):
                embedded = "\n".join(x for x in (doc.title, p.section, p.text) if x)
                rows.append((doc, pos, p.text, p.section, _sha(embedded)))
        with self._lock:
            stored = self.store.vectors_by_text_hash(r[4] for r in rows)
        todo_texts: dict[str, str] = {}
        for doc, _, text, section, h in rows:
            if h not in stored and h not in todo_texts:
                todo_texts[h] = "\n".join(x for x in (doc.title, section, text) if x)
        fresh = dict(zip(todo_texts, self.embed(list(todo_texts.values()), progress=progress), strict=True))
        dim = self.dim
        vecs = (
            np.stack([fresh[h] if h in fresh else np.frombuffer(stored[h], dtype=np.float32) for *_, h in rows])
            if rows
            else np.zeros((0, dim), dtype=np.float32)
        )
        report.vectors_reused = len(rows) - len(fresh)

        replaced = report.updated + report.deleted
        with self._lock:
            self.store.begin()
            try:
                prev = self.store.seq()
                self._catch_up(prev)  # another process may have committed since we opened
                seq, now = prev + 1, time.time()
                old_ids = np.array(self.store.chunk_ids_of(replaced), dtype=np.int64)
                self.store.remove_documents(replaced, seq)
                next_id = self.store.next_chunk_id()
                new_ids = np.arange(next_id, next_id + len(rows), dtype=np.int64)
                for doc, h in todo:
                    self.store.put_document(doc.id, doc.title, h, doc.metadata, now, doc.text)
                chunks = [
                    (
                        Chunk(
                            id=int(cid),
                            doc_id=doc.id,
                            position=pos,
                            text=text,
                            title=doc.title,
                            metadata={**doc.metadata, "section": section} if section else doc.metadata,
                        ),
                        vec,
                        h,
                    )
                    for cid, (doc, pos, text, section, h), vec in zip(new_ids, rows, vecs, strict=True)
                ]
                self.store.put_chunks(chunks, seq, now)
                n_docs, n_chunks = self.store.counts_after(
                    prev, len(report.added) - len(report.deleted), len(rows) - len(old_ids)
                )
                change = repr(([(d.id, h) for d, h in todo], sorted(replaced)))
                snapshot = f"s{seq:05d}-{_sha((self.snapshot or '') + change)[:8]}"
                for key, value in (("dim", dim), ("next_chunk_id", next_id + len(rows)), ("seq", seq)):
                    self.store.set_meta(key, str(value))
                self.store.set_meta("snapshot", snapshot)
                self.store.add_snapshot(snapshot, seq, n_docs, n_chunks)
                self.store.prune(self.config.keep_snapshots, int(self.store.get_meta("faiss_seq", "0") or 0))
                if on_commit is not None:
                    on_commit(self.store)
                self.store.commit()
            except BaseException:
                self.store.rollback()
                raise
            # the cache follows the committed rows; if this fails, the next read catches up from SQLite
            self._apply(old_ids, new_ids, vecs, seq)
            if self._should_checkpoint():
                self.checkpoint()
        report.chunks_written = len(rows)
        report.snapshot = snapshot
        return report

    # reads --------------------------------------------------------------------------------------
    def search(
        self,
        query: str,
        k: int | None = None,
        *,
        mode: str | None = None,
        filters: dict[str, Any] | None = None,
        snapshot: str | None = None,
    ) -> list[Hit]:
        return self.search_many([query], k, mode=mode, filters=filters, snapshot=snapshot)[0]

    def search_many(
        self,
        queries: Sequence[str],
        k: int | None = None,
        *,
        mode: str | None = None,
        filters: dict[str, Any] | None = None,
        snapshot: str | None = None,
    ) -> list[list[Hit]]:
        """Top-k hits per query in `mode` (default from config), optionally filtered and pinned to a snapshot."""
        k = k or self.config.top_k
        mode = mode or self.config.search_mode
        if mode not in SEARCH_MODES:
            raise DataError(f"unknown search mode '{mode}'; choose one of: {', '.join(SEARCH_MODES)}")
        queries = list(queries)
        with self._lock, self.store.reading():
            seq = self._resolve(snapshot)
            now = self.store.seq()
            if now == 0 or not queries:
                return [[] for _ in queries]
            self._catch_up(now)
            depth = max(k, self.config.hybrid_candidates) if mode == "hybrid" else k
            if self.config.mmr:
                depth = max(depth, 4 * k)
            need_vectors = mode != "lexical" or self.config.mmr
            qvecs = self.embed(queries) if need_vectors else None
            dense = (
                self._dense(qvecs, depth, seq, filters, seq == now) if mode != "lexical" and qvecs is not None else []
            )
            lexical = [self.store.lexical(q, depth, seq, filters) for q in queries] if mode != "dense" else []
            if mode == "dense":
                ranked = dense
            elif mode == "lexical":
                ranked = lexical
            else:
                ranked = [self._fuse(d, lx) for d, lx in zip(dense, lexical, strict=True)]
            if self.config.mmr and qvecs is not None:
                ranked = [self._mmr(qv, r, k) for qv, r in zip(qvecs, ranked, strict=True)]
            ranked = [r[:k] for r in ranked]
            chunks = self.store.chunks(sorted({cid for r in ranked for cid, _ in r}))
        return [
            [Hit(chunk=chunks[cid], score=s, rank=n) for n, (cid, s) in enumerate(r, 1) if cid in chunks]
            for r in ranked
        ]

    def _dense(
        self, qvecs: np.ndarray, k: int, seq: int, filters: dict[str, Any] | None, current: bool
    ) -> list[list[tuple[int, float]]]:
        if current and self.faiss is not None:
            # the allowed ids come from the live rows, so they never name a tombstone
            allowed = self.store.live_ids(seq, filters) if filters else None
            dead = set() if allowed is not None else self._tombstones
            n = self.faiss.ntotal if allowed is None else len(allowed)
            if n - len(dead) <= 0:
                return [[] for _ in qvecs]
            scores, ids = vectors.search(self.faiss, self.config, qvecs, min(k + len(dead), n), allowed)
            return [
                [(int(i), float(s)) for s, i in zip(rs, ri, strict=True) if i >= 0 and int(i) not in dead][:k]
                for rs, ri in zip(scores, ids, strict=True)
            ]
        # a pinned older snapshot: exact search over the stored vectors of the chunks live then
        ids_arr, vecs = self.store.live_vectors(self.dim, seq, filters)
        if not len(ids_arr):
            return [[] for _ in qvecs]
        sims = qvecs @ vecs.T
        top = min(k, len(ids_arr))
        out = []
        for row in sims:
            best = np.argpartition(-row, top - 1)[:top]
            best = best[np.argsort(-row[best])]
            out.append([(int(ids_arr[j]), float(row[j])) for j in best])
        return out

    def _fuse(self, dense: list[tuple[int, float]], lexical: list[tuple[int, float]]) -> list[tuple[int, float]]:
        """Reciprocal rank fusion: a chunk ranked high by either list rises; scores need no calibration."""
        c = self.config
        fused: dict[int, float] = {}
        for weight, ranking in ((c.hybrid_dense_weight, dense), (c.hybrid_lexical_weight, lexical)):
            for rank, (cid, _) in enumerate(ranking, 1):
                fused[cid] = fused.get(cid, 0.0) + weight / (c.rrf_k + rank)
        return sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))

    def _mmr(self, qvec: np.ndarray, ranked: list[tuple[int, float]], k: int) -> list[tuple[int, float]]:
        """Maximal marginal relevance: trade a little relevance for hits that do not repeat each other."""
        if len(ranked) <= 1:
            return ranked
        ids = [cid for cid, _ in ranked]
        vecs = self.store.vectors(ids, self.dim)
        rel = vecs @ qvec
        lam = self.config.mmr_lambda
        chosen: list[int] = []
        left = list(range(len(ids)))
        while left and len(chosen) < k:
            if chosen:
                redundancy = (vecs[left] @ vecs[chosen].T).max(axis=1)
                scores = lam * rel[left] - (1 - lam) * redundancy
            else:
                scores = rel[left]
            chosen.append(left.pop(int(np.argmax(scores))))
        return [ranked[i] for i in chosen]

    # documents and stats ------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        with self._lock, self.store.reading():
            docs, chunks = self.store.counts()
            return {
                "snapshot": self.snapshot,
                "documents": docs,
                "chunks": chunks,
                "embedder": self.embedder_ref,
                "index_type": self.config.index_type,
                "snapshots_kept": len(self.store.snapshots()),
            }

    def document(self, doc_id: str) -> dict[str, Any] | None:
        with self._lock:
            return self.store.document(doc_id)

    def get_document(self, doc_id: str) -> Document:
        """The stored document (current snapshot); NotFoundError names an unknown id."""
        with self._lock:
            found = self.store.get_document(doc_id)
        if found is None:
            raise NotFoundError(f"unknown document id '{doc_id}'")
        return found

    def document_ids(self) -> list[str]:
        with self._lock:
            return sorted(self.store.content_hashes())

    def as_langchain_retriever(self, **kwargs: Any) -> Any:
        """A LangChain `BaseRetriever` over this index (kwargs: k, mode, filters, snapshot)."""
        from ragtune.retrieval.langchain_retriever import IndexRetriever

        return IndexRetriever(index=self, **kwargs)

    def close(self) -> None:
        """Write a pending FAISS checkpoint and release the SQLite connection.

        The object stays usable: a later search or write reopens the connection (callers such as an
        eval may keep using an index that other code has closed). Waits for calls in other threads.
        """
        with self._lock:
            if self._pending and not self.store.closed:
                self._try_checkpoint()
            self.store.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
