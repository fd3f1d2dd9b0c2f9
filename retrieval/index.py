"""The index a workspace holds: document lifecycle, snapshots, and dense / lexical / hybrid search.

A commit is one SQLite transaction (rows, vectors, BM25 index, snapshot), so it is atomic and
durable on its own. The FAISS index is a cache of the stored vectors (`FaissCache`): it follows each
commit in memory, is written to `vectors-<snapshot>.faiss` only once enough has changed
(`checkpoint_ratio`), and on open (or when another process has committed) it is caught up from the
rows added and removed since the snapshot it matches, or rebuilt from the stored vectors if the file
is missing or broken. One writer at a time across processes (a file lock); readers use their own
WAL read transaction and are never blocked by it.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import filelock
import numpy as np
from tqdm.auto import tqdm

from ragtune.core.config import SEARCH_MODES, Config, RetrievalConfig
from ragtune.core.errors import DataError, NotFoundError
from ragtune.core.models import load_embedder
from ragtune.core.types import Chunk, Document, Hit, doc_id_problem
from ragtune.retrieval.chunker import Chunker
from ragtune.retrieval.filters import Filters, Matched
from ragtune.retrieval.loaders import FROM_FILE_NAME, TITLE_SOURCE, DocumentsInput, documents_from
from ragtune.retrieval.protocol import IndexLockedError, IndexWriteError, IngestReport, SnapshotNotFoundError
from ragtune.retrieval.ranking import Ranking, exact_top_k, mmr, rrf_fuse
from ragtune.retrieval.rows import RowStore
from ragtune.retrieval.store import Store
from ragtune.retrieval.vector_cache import FaissCache

__all__ = ["Index", "IndexLockedError", "IngestReport", "SnapshotNotFoundError", "content_hash"]


_ROWS_AT_ONCE = 2000  # chunk rows built and written per statement
_HASH_SLICE = 1 << 20  # characters encoded at a time: hashing a large document copies no more than this


def content_hash(doc: Document) -> str:
    """sha256 of title, text and metadata joined by \\x1f, fed in slices (UTF-8 encodes piecewise)."""
    h = hashlib.sha256()
    for part in (doc.title, "\x1f", doc.text, "\x1f", repr(sorted(doc.metadata.items()))):
        for start in range(0, len(part), _HASH_SLICE):
            h.update(part[start : start + _HASH_SLICE].encode())
    return h.hexdigest()


def index_exists(config: Config) -> bool:
    """Whether the configured index has been created: the workspace's store file, or (postgres) always,
    since the database is created and migrated on first open."""
    return config.retrieval.backend == "postgres" or (config.index_dir / "store.sqlite").exists()


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class _Plan:
    """What a commit changes: the documents to (re)write with their content hashes, and its report."""

    report: IngestReport
    todo: list[tuple[Document, str]]

    @property
    def replaced(self) -> list[str]:
        """Documents whose live chunks the commit retires."""
        return self.report.updated + self.report.deleted


log = logging.getLogger("ragtune.retrieval")
_SPACE_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EIO}


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _write_failed(exc: BaseException) -> bool:
    """The storage refused a write: ENOSPC/EFBIG/EDQUOT/EIO, SQLite's SQLITE_FULL or SQLITE_IOERR_* (a
    file-size limit shows as an I/O error), PostgreSQL's DiskFull."""
    if isinstance(exc, OSError) and exc.errno in _SPACE_ERRNOS:
        return True
    name = str(getattr(exc, "sqlite_errorname", ""))
    return name.startswith(("SQLITE_FULL", "SQLITE_IOERR")) or type(exc).__name__ == "DiskFull"


class _Row(NamedTuple):
    """One new chunk before it has an id."""

    doc: Document
    position: int
    text: str
    section: str

    @property
    def embedded(self) -> str:
        """The text its vector is made from: title, section and chunk (so the vector knows the document).

        A title the loader made from the file's name is left out: the vector depends on content only,
        so a renamed or moved file reuses every stored vector."""
        title = "" if self.doc.metadata.get(TITLE_SOURCE) == FROM_FILE_NAME else self.doc.title
        return "\n".join(x for x in (title, self.section, self.text) if x)

    def chunk(self, chunk_id: int) -> Chunk:
        meta = {**self.doc.metadata, "section": self.section} if self.section else self.doc.metadata
        return Chunk(
            id=chunk_id, doc_id=self.doc.id, position=self.position, text=self.text, title=self.doc.title, metadata=meta
        )


@dataclass
class _Batch:
    """A commit's new chunks with their vectors (reused by text hash, or freshly embedded)."""

    rows: list[_Row]
    hashes: list[str]  # of each row's embedded text
    vecs: np.ndarray
    dim: int
    reused: int  # rows whose vector was found stored under the same text hash


@dataclass
class _Written:
    """What a committed transaction changed, for the FAISS cache to follow."""

    seq: int
    snapshot: str
    old_ids: np.ndarray
    new_ids: np.ndarray


class Index:
    """`IndexProtocol` over SQLite (the truth) and a FAISS cache, in one folder of a workspace."""

    def __init__(self, path: Path, config: RetrievalConfig | None = None, embedder: str = "bundled:all-minilm-l6-v2"):
        self.path = Path(path)
        self.config = config or RetrievalConfig()
        self.embedder_ref = embedder
        self.path.mkdir(parents=True, exist_ok=True)
        store = Store(self.path / "store.sqlite")
        self.store: RowStore = store
        self._lock = threading.RLock()
        self._writer = filelock.FileLock(str(self.path / "writer.lock"))
        self._model: Any = None
        self._chunker: Chunker | None = None
        self.cache = FaissCache(self.path, store, self.config, lambda: self.dim)
        with self._lock, self.store.reading():
            self.cache.load(self.store.seq())
        if self.cache.should_checkpoint():
            self._try_checkpoint()

    @classmethod
    def from_config(cls, config: Config) -> Index:
        """The configured index: the workspace's `index_dir` (embedded) or the database at `retrieval.dsn`
        (postgres), with the `retrieval` section and the configured embedder."""
        r = config.retrieval
        if r.backend == "postgres" and r.dsn is not None:
            from ragtune.retrieval.pg_index import PgIndex

            return PgIndex(r.dsn.get_secret_value(), r, config.models.embedder)
        return cls(config.index_dir, r, config.models.embedder)

    @property
    def backend(self) -> str:
        return "embedded"

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
    @property
    def vector_count(self) -> int:
        """Live vectors in the FAISS cache (tombstones not counted); equals the live chunk count."""
        return self.cache.vector_count

    def checkpoint(self) -> None:
        """Write the FAISS file for the current snapshot (the caller holds the writer lock)."""
        with self._lock:
            self.cache.checkpoint(self.snapshot)

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

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction: committed if the block finishes, rolled back if anything raises;
        a full disk (or a file-size limit) becomes an `IndexWriteError` saying nothing was stored."""
        self.store.begin()
        try:
            yield
            self.store.commit()
        except BaseException as exc:
            self.store.rollback()
            if _write_failed(exc):
                raise IndexWriteError(
                    f"index write failed ({_first_line(exc)}): the commit was rolled back and the index is as "
                    "it was; check free disk space and file-size limits, then run the write again"
                ) from None
            raise

    def upsert(self, docs: DocumentsInput, progress: bool = True) -> IngestReport:
        """Add new documents, replace changed ones, skip unchanged ones; one commit, one snapshot.

        `docs`: Documents, dicts {id, text, title?, metadata?}, a `datasets.Dataset` or a path."""
        return self.apply(documents_from(docs), [], progress=progress)

    def delete(self, doc_ids: Iterable[str]) -> IngestReport:
        if isinstance(doc_ids, str):
            raise DataError("delete: pass a list of document ids, not one string")
        return self.apply([], list(doc_ids), progress=False)

    def apply(
        self,
        upserts: Sequence[Document | Mapping[str, Any]],
        deletes: Sequence[str],
        progress: bool = True,
        on_commit: Callable[[RowStore], None] | None = None,
    ) -> IngestReport:
        """A batch of upserts and deletes as one atomic commit; `on_commit` adds writes to the same transaction.

        Dicts in `upserts` are checked and made Documents first (a bad one is a DataError naming it)."""
        if isinstance(deletes, str):
            raise DataError("deletes: pass a list of document ids, not one string")
        upserts = documents_from(upserts)
        seen: set[str] = set()
        for doc in upserts:
            problem = doc_id_problem(doc.id)
            if problem:
                raise DataError(f"document id {doc.id[:80]!r} {problem}")
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
        on_commit: Callable[[RowStore], None] | None,
    ) -> IngestReport:
        """Plan, embed, then write rows and snapshot in one transaction, then let the FAISS cache follow."""
        plan = self._plan(docs, delete_ids)
        if not plan.report.changed:
            if on_commit is not None:  # bookkeeping only (e.g. a sync manifest): no new snapshot
                with self._lock, self._transaction():
                    on_commit(self.store)
            return plan.report
        # chunk and embed outside any transaction and without the read lock: a failure writes nothing
        batch = self._embed_new(plan, progress)
        plan.report.vectors_reused = batch.reused
        with self._lock:
            written = self._write(plan, batch, on_commit)
            # the cache follows the committed rows; if this fails, the next read catches up from SQLite
            self._apply_vectors(written, batch.vecs)
        plan.report.chunks_written = len(batch.rows)
        plan.report.snapshot = written.snapshot
        return plan.report

    def _plan(self, docs: list[Document], delete_ids: list[str]) -> _Plan:
        """Sort the batch into added / updated / unchanged / deleted by content hash; unknown deletes fail."""
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
        return _Plan(report, todo)

    def _embed_new(self, plan: _Plan, progress: bool) -> _Batch:
        """Chunk the changed documents; reuse stored vectors of identical text and embed only the rest."""
        rows: list[_Row] = []
        for (doc, _), pieces in zip(plan.todo, self.chunker.pieces_many([d for d, _ in plan.todo]), strict=True):
            if not pieces:
                raise DataError(f"document '{doc.id}' has no text to index")
            rows.extend(_Row(doc, pos, p.text, p.section) for pos, p in enumerate(pieces))
        hashes = [_sha(row.embedded) for row in rows]
        with self._lock:
            stored = self.store.vectors_by_text_hash(hashes)
        todo_texts: dict[str, str] = {}
        for row, h in zip(rows, hashes, strict=True):
            if h not in stored and h not in todo_texts:
                todo_texts[h] = row.embedded
        fresh = dict(zip(todo_texts, self.embed(list(todo_texts.values()), progress=progress), strict=True))
        dim = self.dim
        vecs = (
            np.stack([fresh[h] if h in fresh else np.frombuffer(stored[h], dtype=np.float32) for h in hashes])
            if rows
            else np.zeros((0, dim), dtype=np.float32)
        )
        return _Batch(rows, hashes, vecs, dim, reused=len(rows) - len(fresh))

    def _write(self, plan: _Plan, batch: _Batch, on_commit: Callable[[RowStore], None] | None) -> _Written:
        """The commit's one transaction: retire replaced chunks, write the new rows, record the snapshot."""
        with self._transaction():
            prev = self.store.seq()
            self.cache.catch_up(prev)  # another process may have committed since we opened
            seq = prev + 1
            next_id = self.store.next_chunk_id()
            old_ids, new_ids = self._write_rows(plan, batch, seq, next_id)
            snapshot = self._record_snapshot(plan, batch, prev, next_id, len(batch.rows) - len(old_ids))
            if on_commit is not None:
                on_commit(self.store)
        return _Written(seq, snapshot, old_ids, new_ids)

    def _write_rows(self, plan: _Plan, batch: _Batch, seq: int, next_id: int) -> tuple[np.ndarray, np.ndarray]:
        """Retire the replaced documents' chunks at `seq`, insert the new documents and chunks from `next_id` on."""
        now = time.time()
        old_ids = np.array(self.store.chunk_ids_of(plan.replaced), dtype=np.int64)
        self.store.remove_documents(plan.replaced, seq)
        new_ids = np.arange(next_id, next_id + len(batch.rows), dtype=np.int64)
        for doc, h in plan.todo:
            self.store.put_document(doc.id, doc.title, h, doc.metadata, now, doc.text)
        for start in range(0, len(batch.rows), _ROWS_AT_ONCE):  # a slice at a time: memory stays flat
            part = slice(start, start + _ROWS_AT_ONCE)
            chunks = [
                (row.chunk(int(cid)), vec, h)
                for cid, row, vec, h in zip(
                    new_ids[part], batch.rows[part], batch.vecs[part], batch.hashes[part], strict=True
                )
            ]
            self.store.put_chunks(chunks, seq, now)
        return old_ids, new_ids

    def _record_snapshot(self, plan: _Plan, batch: _Batch, prev: int, next_id: int, chunks_delta: int) -> str:
        """Name the new snapshot, set the meta rows, add its history row and prune old ones."""
        seq = prev + 1
        n_docs, n_chunks = self.store.counts_after(
            prev, len(plan.report.added) - len(plan.report.deleted), chunks_delta
        )
        change = repr(([(d.id, h) for d, h in plan.todo], sorted(plan.replaced)))
        snapshot = f"s{seq:05d}-{_sha((self.snapshot or '') + change)[:8]}"
        for key, value in (("dim", batch.dim), ("next_chunk_id", next_id + len(batch.rows)), ("seq", seq)):
            self.store.set_meta(key, str(value))
        self.store.set_meta("snapshot", snapshot)
        self.store.add_snapshot(snapshot, seq, n_docs, n_chunks)
        self.store.prune(self.config.keep_snapshots, int(self.store.get_meta("faiss_seq", "0") or 0))
        return snapshot

    def _apply_vectors(self, written: _Written, vecs: np.ndarray) -> None:
        """Bring the FAISS cache to the committed snapshot, and checkpoint it if enough has changed."""
        self.cache.apply(written.old_ids, written.new_ids, vecs, written.seq)
        if self.cache.should_checkpoint():
            try:
                self.checkpoint()
            except (OSError, RuntimeError) as exc:  # the rows are committed; the file is a cache
                log.warning("FAISS checkpoint not written (%s); the next open rebuilds it", _first_line(exc))

    def copy_from(self, source: Index, progress: bool = True) -> str:
        """Copy another index's current snapshot into this empty one (documents, chunks, stored
        vectors; nothing is embedded again), as one commit that keeps the source's snapshot id."""
        with source._lock, source.store.reading():
            seq, snapshot, rows = source.store.seq(), source.snapshot, source.store.live_rows()
            ids = source.document_ids()
            docs = [(source.store.get_document(i), source.store.document(i)) for i in ids]
            next_id = source.store.next_chunk_id()
        if snapshot is None:
            raise DataError(f"index {source.path} has no snapshot to copy")
        with self._writing(), self._lock:
            if self.store.seq() != 0 or self.document_ids():
                raise DataError(f"the target index {self.path} is not empty: copy into a new one")
            with self._transaction():
                for doc, info in tqdm(docs, desc="documents", disable=not progress):
                    if doc is not None and info is not None:
                        self.store.put_document(
                            doc.id, doc.title, info["content_hash"], doc.metadata, info["updated_at"], doc.text
                        )
                self.store.put_chunks(rows, seq, time.time())
                dim = len(rows[0][1]) if rows else self.dim
                for key, value in (("dim", dim), ("next_chunk_id", next_id), ("seq", seq), ("snapshot", snapshot)):
                    self.store.set_meta(key, str(value))
                self.store.add_snapshot(snapshot, seq, len(ids), len(rows))
            self.cache.catch_up(seq)
            self.checkpoint()
        return snapshot

    # reads --------------------------------------------------------------------------------------
    def search(
        self,
        query: str,
        k: int | None = None,
        *,
        mode: str | None = None,
        filters: Filters = None,
        snapshot: str | None = None,
    ) -> list[Hit]:
        return self.search_many([query], k, mode=mode, filters=filters, snapshot=snapshot)[0]

    def search_many(
        self,
        queries: Sequence[str],
        k: int | None = None,
        *,
        mode: str | None = None,
        filters: Filters = None,
        snapshot: str | None = None,
    ) -> list[list[Hit]]:
        """Top-k hits per query in `mode` (default from config), optionally filtered and pinned to a snapshot."""
        k = k or self.config.top_k
        mode = mode or self.config.search_mode
        if mode not in SEARCH_MODES:
            raise DataError(f"unknown search mode '{mode}'; choose one of: {', '.join(SEARCH_MODES)}")
        queries = list(queries)
        with self._lock, self.store.reading():
            if isinstance(filters, Matched):  # pinned to the snapshot it was matched at
                seq = self._resolve(filters.snapshot) if filters.snapshot else filters.seq
            else:
                seq = self._resolve(snapshot)
            now = self.store.seq()
            if now == 0 or not queries:
                return [[] for _ in queries]
            self.cache.catch_up(now)
            ranked = self._rank(queries, k, mode, filters, seq)
            chunks = self.store.chunks(sorted({cid for r in ranked for cid, _ in r}))
        return [
            [Hit(chunk=chunks[cid], score=s, rank=n) for n, (cid, s) in enumerate(r, 1) if cid in chunks]
            for r in ranked
        ]

    def match(self, filters: dict[str, Any], snapshot: str | None = None) -> Matched:
        """The chunk ids that pass `filters` at `snapshot` (default: the current one), for a later search.

        Evaluated on a connection of its own and without the index's lock, so a costly filter (many
        keys and values over a large index) can run in a thread pool while other searches go on."""
        with self._lock, self.store.reading():
            seq = self._resolve(snapshot)
            name = snapshot or self.snapshot or ""
            if seq == 0:
                return Matched(0, name, ())
        return Matched(seq, name, tuple(int(i) for i in self.store.match_ids(seq, filters)))

    def _rank(self, queries: list[str], k: int, mode: str, filters: Filters, seq: int) -> list[Ranking]:
        """Top-k (chunk id, score) per query at `seq`: dense, lexical or RRF-fused, then MMR if configured."""
        depth = max(k, self.config.hybrid_candidates) if mode == "hybrid" else k
        if self.config.mmr:
            depth = max(depth, 4 * k)
        need_vectors = mode != "lexical" or self.config.mmr
        qvecs = self.embed(queries) if need_vectors else None
        dense = self._dense(qvecs, depth, seq, filters) if mode != "lexical" and qvecs is not None else []
        lexical = [self.store.lexical(q, depth, seq, filters) for q in queries] if mode != "dense" else []
        if mode == "dense":
            ranked = dense
        elif mode == "lexical":
            ranked = lexical
        else:
            c = self.config
            ranked = [
                rrf_fuse([(c.hybrid_dense_weight, d), (c.hybrid_lexical_weight, lx)], c.rrf_k)
                for d, lx in zip(dense, lexical, strict=True)
            ]
        if self.config.mmr and qvecs is not None:
            ranked = [self._diversify(qv, r, k) for qv, r in zip(qvecs, ranked, strict=True)]
        return [r[:k] for r in ranked]

    def _dense(self, qvecs: np.ndarray, k: int, seq: int, filters: Filters) -> list[Ranking]:
        """FAISS when it matches `seq` (the current snapshot); an older one: exact search over its stored vectors."""
        if self.cache.faiss is not None and self.cache.seq == seq:
            # the allowed ids come from the live rows, so they never name a tombstone
            if isinstance(filters, Matched):
                allowed: np.ndarray | None = np.array(filters.ids, dtype=np.int64)
            else:
                allowed = self.store.live_ids(seq, filters) if filters else None
            return self.cache.search(qvecs, k, allowed)
        ids, vecs = self.store.live_vectors(self.dim, seq, filters)
        return exact_top_k(qvecs, ids, vecs, k)

    def _diversify(self, qvec: np.ndarray, ranked: Ranking, k: int) -> Ranking:
        """MMR over the candidates' stored vectors (none loaded for a single candidate)."""
        if len(ranked) <= 1:
            return ranked
        vecs = self.store.vectors([cid for cid, _ in ranked], self.dim)
        return mmr(qvec, ranked, vecs, k, self.config.mmr_lambda)

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
            if self.cache.pending and not self.store.closed:
                self._try_checkpoint()
            self.store.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
