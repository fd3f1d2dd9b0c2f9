"""The index contract: what serving, tuning and eval may call on an index, whatever stores it.

`ragtune.retrieval.index.Index` (SQLite + FAISS) implements `IndexProtocol`; a second backend
(e.g. PostgreSQL) implements the same methods with the same keywords, reports and errors, so
callers typed against the protocol work with either.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ragtune.core.errors import NotFoundError, RagtuneError
from ragtune.core.types import Document, Hit
from ragtune.retrieval.filters import Filters


class SnapshotNotFoundError(NotFoundError):
    """A pinned snapshot that never existed or is no longer kept."""


class IndexLockedError(RagtuneError):
    """Another process holds the index's writer lock for longer than `retrieval.lock_timeout`."""


class IndexWriteError(RagtuneError):
    """A commit could not be written (disk full, file too large); it was rolled back, nothing of it stored."""


@dataclass
class IngestReport:
    """What one commit did to each document id, and the snapshot it made."""

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


@runtime_checkable
class IndexProtocol(Protocol):
    """Document lifecycle, snapshots and search over one index.

    Writes are atomic commits that each make a snapshot (`apply` rejects unknown ids and duplicates
    with `DataError`; a busy writer raises `IndexLockedError`); searches may pin a kept snapshot
    (`SnapshotNotFoundError` otherwise). `mode` is "dense", "lexical" or "hybrid" (None: the
    configured default); `filters` are `{key: value | [values] | {"$op": value}}` on chunk metadata.
    """

    @property
    def snapshot(self) -> str | None: ...

    def snapshots(self) -> list[dict[str, Any]]: ...

    # writes
    def upsert(self, docs: Iterable[Document], progress: bool = True) -> IngestReport: ...

    def delete(self, doc_ids: Iterable[str]) -> IngestReport: ...

    def apply(
        self,
        upserts: Sequence[Document],
        deletes: Sequence[str],
        progress: bool = True,
        on_commit: Callable[[Any], None] | None = None,  # gets the backend's store, inside the transaction
    ) -> IngestReport: ...

    # reads
    def search(
        self,
        query: str,
        k: int | None = None,
        *,
        mode: str | None = None,
        filters: Filters = None,
        snapshot: str | None = None,
    ) -> list[Hit]: ...

    def search_many(
        self,
        queries: Sequence[str],
        k: int | None = None,
        *,
        mode: str | None = None,
        filters: Filters = None,
        snapshot: str | None = None,
    ) -> list[list[Hit]]: ...

    def embed(self, texts: Sequence[str], progress: bool = False) -> np.ndarray: ...

    def stats(self) -> dict[str, Any]: ...

    def document(self, doc_id: str) -> dict[str, Any] | None: ...

    def get_document(self, doc_id: str) -> Document: ...

    def document_ids(self) -> list[str]: ...

    def as_langchain_retriever(self, **kwargs: Any) -> Any: ...

    # lifetime
    def close(self) -> None: ...

    def __enter__(self) -> IndexProtocol: ...

    def __exit__(self, *exc: object) -> None: ...
