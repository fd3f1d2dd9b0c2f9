"""The `postgres` backend: the same `Index` (commits, snapshots, tombstones, search) over a database
that several serving replicas share.

Commit planning, chunking, embedding, vector reuse, snapshot naming and ranking are the embedded
index's own code; what differs is where rows live (`PgStore`), how writers are serialised (a
PostgreSQL advisory lock, held on its own connection for the whole commit, released by the server
if the writer dies) and dense search (pgvector's HNSW index in SQL instead of a FAISS cache).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ragtune.core.config import RetrievalConfig
from ragtune.core.types import Hit
from ragtune.retrieval.filters import Filters
from ragtune.retrieval.index import Index
from ragtune.retrieval.pg_store import IndexUnavailableError, PgStore, _driver, _first_line
from ragtune.retrieval.protocol import IndexLockedError
from ragtune.retrieval.ranking import Ranking

WRITER_LOCK = 0x7274_5F77  # advisory lock key of the index's single writer


class NoVectorCache:
    """Stands in for the FAISS cache: pgvector searches the committed rows themselves."""

    faiss: Any = None
    seq = 0
    pending = 0
    vector_count = 0

    def load(self, seq: int) -> None: ...
    def catch_up(self, seq: int) -> None: ...
    def apply(self, removed: np.ndarray, added: np.ndarray, vecs: np.ndarray | None, seq: int) -> None: ...
    def should_checkpoint(self) -> bool:
        return False

    def checkpoint(self, snapshot: str | None) -> None: ...


class PgIndex(Index):
    """`IndexProtocol` over PostgreSQL + pgvector at `dsn`."""

    def __init__(
        self,
        dsn: str,
        config: RetrievalConfig | None = None,
        embedder: str = "bundled:all-minilm-l6-v2",
    ) -> None:
        self.config = config or RetrievalConfig()
        self.path = Path(_redact(dsn))  # for messages only: nothing is written to the filesystem
        self.embedder_ref = embedder
        self.pg = PgStore(dsn, self.config.hnsw_m, self.config.hnsw_ef_construction)
        self.store = self.pg
        self.dsn = dsn
        self._lock = threading.RLock()
        self._lock_conn: Any = None
        self._writer_mutex = threading.Lock()
        self._model = None
        self._chunker = None
        self.cache = NoVectorCache()  # type: ignore[assignment]

    @property
    def vector_count(self) -> int:
        return self.store.counts()[1]

    @property
    def backend(self) -> str:
        return "postgres"

    def checkpoint(self) -> None:
        """Nothing to write: the vectors are the rows."""

    def _try_checkpoint(self) -> None:
        return None

    # writers ------------------------------------------------------------------------------------
    def _writer_session(self) -> Any:
        """The session that holds the writer lock, kept open between commits (a new connection per
        commit costs more than the commit of one document); reopened when it was lost."""
        psycopg = _driver()
        conn = self._lock_conn
        if conn is None or conn.closed or conn.broken:
            try:
                conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=10)
            except psycopg.OperationalError as exc:
                raise IndexUnavailableError(f"cannot connect to PostgreSQL: {_first_line(exc)}") from None
            self._lock_conn = conn
        return conn

    def _acquire_writer(self, conn: Any) -> None:
        deadline = time.monotonic() + self.config.lock_timeout
        while not conn.execute("SELECT pg_try_advisory_lock(%s)", (WRITER_LOCK,)).fetchone()[0]:
            if time.monotonic() >= deadline:
                raise IndexLockedError(
                    f"index {self.path} is being written by another process (waited "
                    f"{self.config.lock_timeout:g} s; set retrieval.lock_timeout to wait longer)"
                )
            time.sleep(0.05)

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Hold the index's advisory lock for the whole commit; wait up to `retrieval.lock_timeout`.

        The lock is a session lock: if this process dies, the server ends its session and frees it."""
        psycopg = _driver()
        with self._writer_mutex:  # one commit at a time in this process; readers never take it
            conn = self._writer_session()
            try:
                self._acquire_writer(conn)
            except psycopg.OperationalError as exc:
                conn.close()
                raise IndexUnavailableError(f"lost the connection to PostgreSQL: {_first_line(exc)}") from None
            try:
                yield
            except psycopg.OperationalError as exc:
                self.store.close()
                raise IndexUnavailableError(
                    f"lost the connection to PostgreSQL during a commit ({_first_line(exc)}); the commit was not "
                    "confirmed: `ragtune index` shows whether its snapshot exists, and a retry is safe"
                ) from None
            finally:
                try:
                    conn.execute("SELECT pg_advisory_unlock(%s)", (WRITER_LOCK,))
                except psycopg.Error:
                    conn.close()  # closing the session releases the lock too

    # reads --------------------------------------------------------------------------------------
    def search_many(
        self,
        queries: Sequence[str],
        k: int | None = None,
        *,
        mode: str | None = None,
        filters: Filters = None,
        snapshot: str | None = None,
    ) -> list[list[Hit]]:
        """As the embedded index; a dropped connection is reopened and the search retried once."""
        psycopg = _driver()
        for attempt in (1, 2):
            try:
                return super().search_many(queries, k, mode=mode, filters=filters, snapshot=snapshot)
            except psycopg.OperationalError as exc:
                self.store.close()
                if attempt == 2:
                    raise IndexUnavailableError(f"PostgreSQL search failed twice: {_first_line(exc)}") from None
        raise AssertionError("unreachable")

    def _dense(self, qvecs: np.ndarray, k: int, seq: int, filters: Filters) -> list[Ranking]:
        return [self.pg.dense(qv, k, seq, filters, self.config.hnsw_ef_search) for qv in qvecs]

    def stats(self) -> dict[str, Any]:
        stats = super().stats()
        return {
            **stats,
            "index_type": "hnsw (pgvector)",
            "backend": "postgres",
            "schema_version": self.pg.schema_version(),
        }

    def close(self) -> None:
        with self._lock:
            self.store.close()
            if self._lock_conn is not None:
                self._lock_conn.close()
                self._lock_conn = None


def _redact(dsn: str) -> str:
    """The DSN without its password, for messages."""
    try:
        from psycopg.conninfo import conninfo_to_dict

        parts = {k: v for k, v in conninfo_to_dict(dsn).items() if k != "password"}
        return "postgresql:" + " ".join(f"{k}={v}" for k, v in sorted(parts.items()))
    except Exception:  # noqa: BLE001 - a malformed DSN fails with its own error when connecting
        return "postgresql"
