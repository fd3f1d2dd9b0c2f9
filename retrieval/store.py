"""SQLite holds the truth: documents, chunk text, metadata and the float32 vectors.

FAISS is a cache of the vectors that can always be rebuilt from here, never by re-embedding.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ragtune.core.types import Chunk

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    id TEXT PRIMARY KEY, title TEXT NOT NULL, content_hash TEXT NOT NULL,
    metadata TEXT NOT NULL, updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY, doc_id TEXT NOT NULL REFERENCES documents(id),
    position INTEGER NOT NULL, text TEXT NOT NULL, title TEXT NOT NULL,
    metadata TEXT NOT NULL, vector BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc_id);
CREATE TABLE IF NOT EXISTS snapshots (
    id TEXT PRIMARY KEY, seq INTEGER NOT NULL, created_at REAL NOT NULL,
    n_documents INTEGER NOT NULL, n_chunks INTEGER NOT NULL
);
"""


class Store:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.executescript(SCHEMA)

    # meta ---------------------------------------------------------------------------------------
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)", (key, value))

    def begin(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self.conn.execute("COMMIT")

    def rollback(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    # documents ----------------------------------------------------------------------------------
    def content_hashes(self) -> dict[str, str]:
        return dict(self.conn.execute("SELECT id, content_hash FROM documents").fetchall())

    def chunk_ids_of(self, doc_ids: Iterable[str]) -> list[int]:
        ids: list[int] = []
        for doc_id in doc_ids:
            ids.extend(r[0] for r in self.conn.execute("SELECT id FROM chunks WHERE doc_id=?", (doc_id,)))
        return ids

    def delete_documents(self, doc_ids: Iterable[str]) -> None:
        for doc_id in doc_ids:
            self.conn.execute("DELETE FROM chunks WHERE doc_id=?", (doc_id,))
            self.conn.execute("DELETE FROM documents WHERE id=?", (doc_id,))

    def put_document(self, doc_id: str, title: str, content_hash: str, metadata: dict[str, Any]) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO documents(id, title, content_hash, metadata, updated_at) VALUES(?,?,?,?,?)",
            (doc_id, title, content_hash, json.dumps(metadata), time.time()),
        )

    def put_chunk(self, chunk: Chunk, vector: np.ndarray) -> None:
        self.conn.execute(
            "INSERT INTO chunks(id, doc_id, position, text, title, metadata, vector) VALUES(?,?,?,?,?,?,?)",
            (
                chunk.id,
                chunk.doc_id,
                chunk.position,
                chunk.text,
                chunk.title,
                json.dumps(chunk.metadata),
                np.asarray(vector, dtype=np.float32).tobytes(),
            ),
        )

    def next_chunk_id(self) -> int:
        return int(self.get_meta("next_chunk_id", "1") or 1)

    # reads --------------------------------------------------------------------------------------
    def chunks(self, ids: list[int]) -> dict[int, Chunk]:
        out: dict[int, Chunk] = {}
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            marks = ",".join("?" * len(part))
            rows = self.conn.execute(
                f"SELECT id, doc_id, position, text, title, metadata FROM chunks WHERE id IN ({marks})", part
            )
            for cid, doc_id, pos, text, title, meta in rows:
                out[cid] = Chunk(id=cid, doc_id=doc_id, position=pos, text=text, title=title, metadata=json.loads(meta))
        return out

    def all_vectors(self, dim: int) -> tuple[np.ndarray, np.ndarray]:
        rows = self.conn.execute("SELECT id, vector FROM chunks ORDER BY id").fetchall()
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dim)
        return ids, vecs

    def document(self, doc_id: str) -> dict[str, Any] | None:
        row = self.conn.execute(
            "SELECT id, title, content_hash, metadata, updated_at FROM documents WHERE id=?", (doc_id,)
        ).fetchone()
        if row is None:
            return None
        n = self.conn.execute("SELECT COUNT(*) FROM chunks WHERE doc_id=?", (doc_id,)).fetchone()[0]
        return {
            "id": row[0],
            "title": row[1],
            "content_hash": row[2],
            "metadata": json.loads(row[3]),
            "updated_at": row[4],
            "chunks": n,
        }

    def counts(self) -> tuple[int, int]:
        docs = self.conn.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
        chunks = self.conn.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
        return int(docs), int(chunks)

    def add_snapshot(self, snapshot: str, seq: int) -> None:
        docs, chunks = self.counts()
        self.conn.execute(
            "INSERT OR REPLACE INTO snapshots(id, seq, created_at, n_documents, n_chunks) VALUES(?,?,?,?,?)",
            (snapshot, seq, time.time(), docs, chunks),
        )

    def snapshots(self) -> list[dict[str, Any]]:
        rows = self.conn.execute("SELECT id, seq, created_at, n_documents, n_chunks FROM snapshots ORDER BY seq")
        return [dict(zip(("id", "seq", "created_at", "documents", "chunks"), r, strict=True)) for r in rows]

    def close(self) -> None:
        self.conn.close()
