"""SQLite holds the truth: documents, chunk text, metadata, the float32 vectors and the BM25 index.

FAISS is a cache of the vectors that can always be rebuilt or caught up from here, never by
re-embedding. Chunks are never updated in place: a chunk carries the snapshot sequence it was added
in (`added_seq`) and the one it was removed in (`removed_seq`), so any kept snapshot can be searched
exactly as it was. The FTS5 table is written in the same transaction as the rows it indexes.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ragtune.core.types import Chunk, Document
from ragtune.retrieval.filters import Filters, Matched, parse_filters

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    id TEXT PRIMARY KEY, title TEXT NOT NULL, content_hash TEXT NOT NULL,
    metadata TEXT NOT NULL, updated_at REAL NOT NULL, text TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY, doc_id TEXT NOT NULL,
    position INTEGER NOT NULL, text TEXT NOT NULL, title TEXT NOT NULL,
    metadata TEXT NOT NULL, vector BLOB NOT NULL,
    added_seq INTEGER NOT NULL DEFAULT 0, removed_seq INTEGER,
    text_hash TEXT, updated_at REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS snapshots (
    id TEXT PRIMARY KEY, seq INTEGER NOT NULL, created_at REAL NOT NULL,
    n_documents INTEGER NOT NULL, n_chunks INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS manifest (
    root TEXT NOT NULL, path TEXT NOT NULL, file_hash TEXT NOT NULL, doc_ids TEXT NOT NULL,
    PRIMARY KEY (root, path)
);
"""
# created after the migration below, since old stores lack the columns they name
INDEXES = """
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc_id);
CREATE INDEX IF NOT EXISTS chunks_removed ON chunks(removed_seq);
CREATE INDEX IF NOT EXISTS chunks_added ON chunks(added_seq);
CREATE INDEX IF NOT EXISTS chunks_text_hash ON chunks(text_hash);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(
    title, text, tokenize = 'porter unicode61 remove_diacritics 2'
);
"""
NEW_COLUMNS = {
    "added_seq": "INTEGER NOT NULL DEFAULT 0",
    "removed_seq": "INTEGER",
    "text_hash": "TEXT",
    "updated_at": "REAL NOT NULL DEFAULT 0",
}
LIVE_AT = "c.added_seq <= :seq AND (c.removed_seq IS NULL OR c.removed_seq > :seq)"
CHUNK_COLUMNS = "c.id, c.doc_id, c.position, c.text, c.title, c.metadata"

# Short English function words: dropped from lexical queries, where they only add noise to BM25.
_STOP = (
    "a an and are as at be been but by can do does for from had has have how i if in into is it its "
    "may of on or so such than that the their then there these they this those to was were what when "
    "where which while who why will with would"
)
STOPWORDS = frozenset(_STOP.split())
_COLUMNS = {"doc_id": "c.doc_id", "title": "c.title", "updated_at": "c.updated_at"}


def fts_query(text: str) -> str:
    """A user's words as an FTS5 query: every term quoted (no FTS5 syntax gets through), OR-ed."""
    return " OR ".join(f'"{t}"' for t in query_terms(text))


def query_terms(text: str) -> list[str]:
    """A user's words for lexical search: lower-cased, de-duplicated, stopwords dropped."""
    terms: list[str] = []
    for word in re.findall(r"\w+", text.lower()):
        if word not in STOPWORDS and word not in terms:
            terms.append(word)
    return terms


def filter_sql(filters: Filters) -> tuple[str, dict[str, Any]]:
    """`retrieval.filters` conditions as one SQLite condition on chunk `c` (values as named parameters);
    ids matched ahead (`Matched`) as one indexed lookup."""
    if isinstance(filters, Matched):
        return " AND c.id IN (SELECT value FROM json_each(:matched))", {"matched": json.dumps(filters.ids)}
    parts: list[str] = []
    params: dict[str, Any] = {}
    for n, cond in enumerate(parse_filters(filters)):
        names = [f"f{n}_{i}" for i in range(len(cond.values))]
        params.update(zip(names, cond.values, strict=True))
        rhs = "(" + ", ".join(f":{x}" for x in names) + ")" if cond.sql_op == "IN" else f":{names[0]}"
        if cond.is_column:
            test = f"{_COLUMNS[cond.key]} {cond.sql_op} {rhs}"
        else:
            params[f"p{n}"] = f'$."{cond.key}"'
            test = f"EXISTS (SELECT 1 FROM json_each(c.metadata, :p{n}) AS j WHERE j.value {cond.sql_op} {rhs})"
        parts.append(f"NOT ({test})" if cond.negated else test)
    return ("", {}) if not parts else (" AND " + " AND ".join(parts), params)


class Store:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self.conn.executescript(SCHEMA)
        self._migrate()
        self.conn.executescript(INDEXES)
        if self.get_meta("fts_filled") is None:  # a store from before the lexical index
            self.begin()
            self.conn.execute("INSERT INTO chunks_fts(rowid, title, text) SELECT id, title, text FROM chunks")
            self.set_meta("fts_filled", "1")
            self.commit()

    @property
    def conn(self) -> sqlite3.Connection:
        """The connection, opened again if `close()` was called while the store is still in use.

        A long-lived object (a pipeline's index, an eval's) may outlive a `close()` made by other
        code on its behalf; reopening costs one connect, whereas failing would lose the caller's
        write. Rows live in the file, so nothing is lost by reopening.
        """
        if self._conn is None:
            conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=60)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            self._conn = conn
        return self._conn

    @property
    def closed(self) -> bool:
        return self._conn is None

    def _migrate(self) -> None:
        have = {r[1] for r in self.conn.execute("PRAGMA table_info(chunks)")}
        for name, decl in NEW_COLUMNS.items():
            if name not in have:
                self.conn.execute(f"ALTER TABLE chunks ADD COLUMN {name} {decl}")
        if "text" not in {r[1] for r in self.conn.execute("PRAGMA table_info(documents)")}:
            self.conn.execute("ALTER TABLE documents ADD COLUMN text TEXT NOT NULL DEFAULT ''")

    # transactions and meta ----------------------------------------------------------------------
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)", (key, value))

    def seq(self) -> int:
        return int(self.get_meta("seq", "0") or 0)

    def begin(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self.conn.execute("COMMIT")

    def rollback(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    @contextmanager
    def reading(self) -> Iterator[None]:
        """One read transaction: every query inside sees the same commit (WAL never blocks it)."""
        if self.conn.in_transaction:
            yield
            return
        self.conn.execute("BEGIN")
        try:
            yield
        finally:
            if self.conn.in_transaction:
                self.conn.execute("COMMIT")

    # documents ----------------------------------------------------------------------------------
    def content_hashes(self, doc_ids: Iterable[str] | None = None) -> dict[str, str]:
        """Stored content hashes: of all documents, or only of `doc_ids` (a commit's batch, cheap at any size)."""
        if doc_ids is None:
            return dict(self.conn.execute("SELECT id, content_hash FROM documents").fetchall())
        wanted = list(dict.fromkeys(doc_ids))
        out: dict[str, str] = {}
        for start in range(0, len(wanted), 500):
            part = wanted[start : start + 500]
            marks = ",".join("?" * len(part))
            out.update(self.conn.execute(f"SELECT id, content_hash FROM documents WHERE id IN ({marks})", part))
        return out

    def chunk_ids_of(self, doc_ids: Iterable[str]) -> list[int]:
        """Live chunk ids of these documents."""
        ids: list[int] = []
        for doc_id in doc_ids:
            rows = self.conn.execute("SELECT id FROM chunks WHERE doc_id=? AND removed_seq IS NULL", (doc_id,))
            ids.extend(r[0] for r in rows)
        return ids

    def remove_documents(self, doc_ids: Iterable[str], seq: int) -> None:
        """Retire the documents' live chunks at `seq` (kept for older snapshots) and forget the documents."""
        for doc_id in doc_ids:
            self.conn.execute("UPDATE chunks SET removed_seq=? WHERE doc_id=? AND removed_seq IS NULL", (seq, doc_id))
            self.conn.execute("DELETE FROM documents WHERE id=?", (doc_id,))

    def put_document(
        self, doc_id: str, title: str, content_hash: str, metadata: dict[str, Any], now: float, text: str
    ) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO documents(id, title, content_hash, metadata, updated_at, text) VALUES(?,?,?,?,?,?)",
            (doc_id, title, content_hash, json.dumps(metadata), now, text),
        )

    def put_chunks(self, rows: Sequence[tuple[Chunk, np.ndarray, str]], seq: int, now: float) -> None:
        self.conn.executemany(
            "INSERT INTO chunks(id, doc_id, position, text, title, metadata, vector, added_seq, text_hash, updated_at)"
            " VALUES(?,?,?,?,?,?,?,?,?,?)",
            (  # a generator: no second copy of every row and vector at once
                (
                    c.id,
                    c.doc_id,
                    c.position,
                    c.text,
                    c.title,
                    json.dumps(c.metadata),
                    np.asarray(v, dtype=np.float32).tobytes(),
                    seq,
                    h,
                    now,
                )
                for c, v, h in rows
            ),
        )
        self.conn.executemany(
            "INSERT INTO chunks_fts(rowid, title, text) VALUES(?,?,?)", ((c.id, c.title, c.text) for c, _, _ in rows)
        )

    def vectors_by_text_hash(self, hashes: Iterable[str]) -> dict[str, bytes]:
        """Stored vectors of chunks whose embedded text is identical: moved or unchanged text costs no embedding."""
        wanted = sorted(set(hashes))
        out: dict[str, bytes] = {}
        for start in range(0, len(wanted), 500):
            part = wanted[start : start + 500]
            marks = ",".join("?" * len(part))
            for h, blob in self.conn.execute(
                f"SELECT text_hash, vector FROM chunks WHERE text_hash IN ({marks})", part
            ):
                out[h] = blob
        return out

    def next_chunk_id(self) -> int:
        return int(self.get_meta("next_chunk_id", "1") or 1)

    # reads --------------------------------------------------------------------------------------
    def chunks(self, ids: Sequence[int]) -> dict[int, Chunk]:
        out: dict[int, Chunk] = {}
        ids = list(ids)
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            marks = ",".join("?" * len(part))
            rows = self.conn.execute(f"SELECT {CHUNK_COLUMNS} FROM chunks c WHERE c.id IN ({marks})", part)
            for cid, doc_id, pos, text, title, meta in rows:
                out[cid] = Chunk(id=cid, doc_id=doc_id, position=pos, text=text, title=title, metadata=json.loads(meta))
        return out

    def vectors(self, ids: Sequence[int], dim: int) -> np.ndarray:
        blobs: dict[int, bytes] = {}
        ids = list(ids)
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            marks = ",".join("?" * len(part))
            blobs.update(self.conn.execute(f"SELECT id, vector FROM chunks WHERE id IN ({marks})", part).fetchall())
        return np.frombuffer(b"".join(blobs[i] for i in ids), dtype=np.float32).reshape(len(ids), dim)

    def live_vectors(self, dim: int, seq: int | None = None, filters: Filters = None) -> tuple[np.ndarray, np.ndarray]:
        """Ids and vectors of the chunks live at `seq` (default: now) that pass `filters`, by id."""
        where, params = filter_sql(filters)
        rows = self.conn.execute(
            f"SELECT c.id, c.vector FROM chunks c WHERE {LIVE_AT}{where} ORDER BY c.id",
            {"seq": self.seq() if seq is None else seq, **params},
        ).fetchall()
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dim)
        return ids, vecs

    def all_vectors(self, dim: int) -> tuple[np.ndarray, np.ndarray]:
        return self.live_vectors(dim)

    def live_rows(self) -> list[tuple[Chunk, np.ndarray, str]]:
        """Every live chunk with its stored vector and text hash, by id (what a copy to another backend needs)."""
        rows = self.conn.execute(
            f"SELECT {CHUNK_COLUMNS}, c.vector, c.text_hash FROM chunks c WHERE c.removed_seq IS NULL ORDER BY c.id"
        ).fetchall()
        return [
            (
                Chunk(id=cid, doc_id=doc_id, position=pos, text=text, title=title, metadata=json.loads(meta)),
                np.frombuffer(blob, dtype=np.float32),
                th or "",
            )
            for cid, doc_id, pos, text, title, meta, blob, th in rows
        ]

    def live_ids(self, seq: int, filters: Filters = None) -> np.ndarray:
        where, params = filter_sql(filters)
        rows = self.conn.execute(f"SELECT c.id FROM chunks c WHERE {LIVE_AT}{where}", {"seq": seq, **params})
        return np.array([r[0] for r in rows], dtype=np.int64)

    def match_ids(self, seq: int, filters: Filters) -> np.ndarray:
        """`live_ids` on a connection of its own (a read transaction in WAL): a slow filter holds up
        no search or commit on the shared connection."""
        where, params = filter_sql(filters)
        conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=60)
        try:
            rows = conn.execute(f"SELECT c.id FROM chunks c WHERE {LIVE_AT}{where}", {"seq": seq, **params})
            return np.array([r[0] for r in rows], dtype=np.int64)
        finally:
            conn.close()

    def delta(self, from_seq: int, to_seq: int) -> tuple[list[int], list[int]]:
        """Chunks to remove from and to add to an index that matches `from_seq` so that it matches `to_seq`."""
        removed = self.conn.execute(
            "SELECT id FROM chunks WHERE removed_seq > ? AND removed_seq <= ? AND added_seq <= ?",
            (from_seq, to_seq, from_seq),
        ).fetchall()
        added = self.conn.execute(
            "SELECT id FROM chunks WHERE added_seq > ? AND added_seq <= ? AND (removed_seq IS NULL OR removed_seq > ?)"
            " ORDER BY id",
            (from_seq, to_seq, to_seq),
        ).fetchall()
        return [r[0] for r in removed], [r[0] for r in added]

    def lexical(self, query: str, k: int, seq: int, filters: Filters = None) -> list[tuple[int, float]]:
        """BM25 (FTS5) over title and text of the chunks live at `seq`: (chunk id, score), best first."""
        match = fts_query(query)
        if not match:
            return []
        where, params = filter_sql(filters)
        rows = self.conn.execute(
            "SELECT c.id, bm25(chunks_fts) AS s FROM chunks_fts JOIN chunks c ON c.id = chunks_fts.rowid"
            f" WHERE chunks_fts MATCH :q AND {LIVE_AT}{where} ORDER BY s LIMIT :k",
            {"q": match, "seq": seq, "k": k, **params},
        ).fetchall()
        return [(int(cid), -float(s)) for cid, s in rows]

    def document(self, doc_id: str) -> dict[str, Any] | None:
        row = self.conn.execute(
            "SELECT id, title, content_hash, metadata, updated_at FROM documents WHERE id=?", (doc_id,)
        ).fetchone()
        if row is None:
            return None
        n = self.conn.execute(
            "SELECT COUNT(*) FROM chunks WHERE doc_id=? AND removed_seq IS NULL", (doc_id,)
        ).fetchone()[0]
        return {
            "id": row[0],
            "title": row[1],
            "content_hash": row[2],
            "metadata": json.loads(row[3]),
            "updated_at": row[4],
            "chunks": n,
        }

    def get_document(self, doc_id: str) -> Document | None:
        row = self.conn.execute("SELECT id, title, metadata, text FROM documents WHERE id=?", (doc_id,)).fetchone()
        if row is None:
            return None
        text = row[3] or "\n".join(  # stores from before the text column: the chunks, in order
            r[0]
            for r in self.conn.execute(
                "SELECT text FROM chunks WHERE doc_id=? AND removed_seq IS NULL ORDER BY position", (doc_id,)
            )
        )
        return Document(id=row[0], title=row[1], metadata=json.loads(row[2]), text=text)

    def counts(self) -> tuple[int, int]:
        """Live documents and chunks."""
        docs = self.conn.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
        chunks = self.conn.execute("SELECT COUNT(*) FROM chunks WHERE removed_seq IS NULL").fetchone()[0]
        return int(docs), int(chunks)

    def counts_after(self, prev_seq: int, docs_delta: int, chunks_delta: int) -> tuple[int, int]:
        """Live counts after a commit, from the previous snapshot's row (no scan of a large store)."""
        row = self.conn.execute("SELECT n_documents, n_chunks FROM snapshots WHERE seq=?", (prev_seq,)).fetchone()
        if row is None:  # the first commit, or a store from before the snapshot table: count (in this transaction)
            return self.counts()
        return int(row[0]) + docs_delta, int(row[1]) + chunks_delta

    # snapshots ----------------------------------------------------------------------------------
    def add_snapshot(self, snapshot: str, seq: int, n_documents: int, n_chunks: int) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO snapshots(id, seq, created_at, n_documents, n_chunks) VALUES(?,?,?,?,?)",
            (snapshot, seq, time.time(), n_documents, n_chunks),
        )

    def snapshots(self) -> list[dict[str, Any]]:
        rows = self.conn.execute("SELECT id, seq, created_at, n_documents, n_chunks FROM snapshots ORDER BY seq")
        return [dict(zip(("id", "seq", "created_at", "documents", "chunks"), r, strict=True)) for r in rows]

    def snapshot_seq(self, snapshot: str) -> int | None:
        row = self.conn.execute("SELECT seq FROM snapshots WHERE id=?", (snapshot,)).fetchone()
        return int(row[0]) if row else None

    def prune(self, keep: int, faiss_seq: int) -> None:
        """Forget all but the last `keep` snapshots and the chunks none of them (nor the FAISS file) can see."""
        rows = self.conn.execute("SELECT seq FROM snapshots ORDER BY seq DESC LIMIT ?", (keep,)).fetchall()
        if not rows:
            return
        oldest = int(rows[-1][0])
        self.conn.execute("DELETE FROM snapshots WHERE seq < ?", (oldest,))
        bound = min(oldest, faiss_seq)
        self.conn.execute(
            "DELETE FROM chunks_fts WHERE rowid IN (SELECT id FROM chunks WHERE removed_seq <= ?)", (bound,)
        )
        self.conn.execute("DELETE FROM chunks WHERE removed_seq <= ?", (bound,))
        self.set_meta("pruned_upto", str(max(bound, int(self.get_meta("pruned_upto", "0") or 0))))

    # sync manifest ------------------------------------------------------------------------------
    def manifest(self, root: str) -> dict[str, tuple[str, list[str]]]:
        rows = self.conn.execute("SELECT path, file_hash, doc_ids FROM manifest WHERE root=?", (root,))
        return {p: (h, json.loads(ids)) for p, h, ids in rows}

    def set_manifest(self, root: str, entries: dict[str, tuple[str, list[str]]], drop: Iterable[str]) -> None:
        self.conn.executemany("DELETE FROM manifest WHERE root=? AND path=?", [(root, p) for p in drop])
        self.conn.executemany(
            "INSERT OR REPLACE INTO manifest(root, path, file_hash, doc_ids) VALUES(?,?,?,?)",
            [(root, p, h, json.dumps(ids)) for p, (h, ids) in entries.items()],
        )

    def close(self) -> None:
        """Release the connection (idempotent); a later call on this store reopens it."""
        conn, self._conn = self._conn, None
        if conn is not None:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            conn.close()
