"""The FAISS index as a cache of the vectors SQLite stores, and its checkpoint files.

It follows each commit in memory, is written to `vectors-<snapshot>.faiss` only once enough has
changed (`checkpoint_ratio`), and is caught up from the rows added and removed since the snapshot it
matches (`Store.delta`), or rebuilt from the stored vectors if no file is usable. Nothing is ever
embedded again. Each checkpoint records its file's sha256 in the store (`faiss_checksum`); a file
whose bytes do not match (flipped bits, a zeroed page, another index's file) is never loaded: the
cache is rebuilt from the stored vectors, with a warning. Not thread-safe on its own: the owning
`Index` calls it under its lock.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ragtune.core.config import RetrievalConfig
from ragtune.retrieval import vectors
from ragtune.retrieval.ranking import Ranking
from ragtune.retrieval.store import Store

log = logging.getLogger("ragtune.retrieval")
CHECKSUM_KEY = "faiss_checksum"  # meta row: {file name: sha256} of the checkpoint file(s) written
_FILE_SEQ = re.compile(r"^vectors-s(\d+)-[0-9a-f]+\.faiss$")
# Removed chunks stay in the in-memory FAISS index as tombstones (skipped at search time) until this
# many pile up: removing from a flat index moves every vector after it (about 15 ms at 100k chunks),
# so one-document updates batch that cost instead of paying it on every commit.
MAX_TOMBSTONES = 128


class FaissCache:
    """The in-memory FAISS index of the chunks live at snapshot sequence `seq`, plus tombstones."""

    def __init__(self, path: Path, store: Store, config: RetrievalConfig, dim: Callable[[], int]) -> None:
        self.path = path
        self.store = store
        self.config = config
        self._dim = dim  # a callable: the embedder is loaded only if the store does not know the dimension
        self.faiss: Any = None
        self.seq = 0
        self.pending = 0  # chunks changed since the FAISS file on disk was written
        self.tombstones: set[int] = set()  # removed chunk ids still physically in self.faiss

    @property
    def vector_count(self) -> int:
        """Live vectors in the FAISS cache (tombstones not counted); equals the live chunk count."""
        return 0 if self.faiss is None else int(self.faiss.ntotal) - len(self.tombstones)

    # files --------------------------------------------------------------------------------------
    def file(self, snapshot: str) -> Path:
        return self.path / f"vectors-{snapshot}.faiss"

    def files(self) -> list[tuple[int, Path]]:
        """The FAISS files on disk with the snapshot sequence each matches, newest first."""
        found = [(int(m.group(1)), f) for f in self.path.glob("vectors-*.faiss") if (m := _FILE_SEQ.match(f.name))]
        return sorted(found, reverse=True)

    # following the store ------------------------------------------------------------------------
    def load(self, seq: int) -> None:
        """Match `seq`: the newest usable file + the delta since, or a rebuild from SQLite."""
        if seq == 0:
            self.faiss, self.seq, self.pending = None, 0, 0
            self.tombstones = set()
            return
        pruned = self._pruned_upto()
        for fseq, f in self.files():
            if fseq > seq or fseq < pruned:
                continue  # a crashed commit's file, or one whose delta is no longer known
            if not self._verified(f):
                continue
            try:
                index = vectors.read(f)
            except RuntimeError:
                continue  # truncated or corrupt
            if index.ntotal != len(self.store.live_ids(fseq)):
                continue  # behind the rows it claims to match
            self.faiss, self.seq, self.pending = index, fseq, 0
            self.tombstones = set()
            self.catch_up(seq)
            return
        ids, vecs = self.store.live_vectors(self._dim(), seq)
        self.faiss = vectors.build(self.config, vecs.shape[1] if len(vecs) else self._dim(), ids, vecs)
        self.seq, self.pending = seq, max(1, len(ids))
        self.tombstones = set()

    def catch_up(self, seq: int) -> None:
        """Apply the commits made since the cache was current (by this or another process)."""
        if self.faiss is None or self.seq == seq:
            if self.faiss is None and seq:
                self.load(seq)
            return
        if self.seq < self._pruned_upto() or self.seq > seq:
            self.load(seq)
            return
        removed, added = self.store.delta(self.seq, seq)
        self.apply(np.array(removed, dtype=np.int64), np.array(added, dtype=np.int64), None, seq)

    def apply(self, removed: np.ndarray, added: np.ndarray, vecs: np.ndarray | None, seq: int) -> None:
        """Follow one change to `seq`: `removed` become tombstones, `added` (with `vecs`, else stored) go in."""
        if self.faiss is None:
            ids, all_vecs = self.store.live_vectors(self._dim(), seq)
            self.faiss = vectors.build(self.config, self._dim(), ids, all_vecs)
            self.tombstones = set()
        else:
            self.tombstones.update(int(i) for i in removed)
            vectors.add(self.faiss, added, self.store.vectors(added.tolist(), self._dim()) if vecs is None else vecs)
        self.seq = seq
        self.pending += len(removed) + len(added)
        if len(self.tombstones) > MAX_TOMBSTONES:
            self.compact()

    def compact(self) -> None:
        """Physically drop the tombstoned vectors (before a checkpoint, or once enough piled up).

        HNSW cannot remove vectors, so it is rebuilt from the stored vectors of the chunks live at the
        snapshot it matches: tombstones make that happen once per `MAX_TOMBSTONES` removals, not per commit.
        """
        if self.tombstones and self.faiss is not None:
            if vectors.can_remove(self.faiss):
                vectors.remove(self.faiss, np.fromiter(self.tombstones, dtype=np.int64))
            else:
                ids, all_vecs = self.store.live_vectors(self._dim(), self.seq)
                self.faiss = vectors.build(self.config, self._dim(), ids, all_vecs)
        self.tombstones = set()

    def _verified(self, f: Path) -> bool:
        """Whether `f` holds exactly the bytes its checkpoint wrote (the sha256 the store recorded)."""
        recorded = self._checksums().get(f.name)
        try:
            actual = vectors.checksum(f)
        except OSError:
            return False  # deleted meanwhile (another process checkpointed)
        if recorded == actual:
            return True
        if recorded is None:
            log.warning("FAISS file %s has no recorded checksum; rebuilding it from the stored vectors", f.name)
        else:
            log.warning(
                "FAISS file %s does not match its recorded checksum (corrupted or replaced); "
                "rebuilding it from the stored vectors",
                f.name,
            )
        return False

    def _checksums(self) -> dict[str, str]:
        try:
            found = json.loads(self.store.get_meta(CHECKSUM_KEY, "{}") or "{}")
        except ValueError:
            return {}
        return found if isinstance(found, dict) else {}

    def _pruned_upto(self) -> int:
        return int(self.store.get_meta("pruned_upto", "0") or 0)

    # checkpoints --------------------------------------------------------------------------------
    def should_checkpoint(self) -> bool:
        if self.faiss is None:
            return False
        return self.pending > self.config.checkpoint_ratio * max(1, self.vector_count) or not self.files()

    def checkpoint(self, snapshot: str | None) -> None:
        """Write the file for `snapshot` if the cache matches the store's current one; drop the others."""
        if self.faiss is None or snapshot is None or self.seq != self.store.seq():
            return
        self.compact()  # the file must hold exactly the chunks live at its snapshot
        digest = vectors.write(self.faiss, self.file(snapshot))
        self.store.set_meta(CHECKSUM_KEY, json.dumps({self.file(snapshot).name: digest}))
        self.store.set_meta("faiss_seq", str(self.seq))
        self.pending = 0
        for _, f in self.files():
            if f.name != self.file(snapshot).name:
                f.unlink(missing_ok=True)
        for f in self.path.glob("vectors-*.tmp"):
            f.unlink(missing_ok=True)

    # search -------------------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None) -> list[Ranking]:
        """Top-k per query among all live vectors, or only `allowed` ids (from live rows: never a tombstone)."""
        dead = set() if allowed is not None else self.tombstones
        n = self.faiss.ntotal if allowed is None else len(allowed)
        if n - len(dead) <= 0:
            return [[] for _ in queries]
        scores, ids = vectors.search(self.faiss, self.config, queries, min(k + len(dead), n), allowed)
        return [
            [(int(i), float(s)) for s, i in zip(rs, ri, strict=True) if i >= 0 and int(i) not in dead][:k]
            for rs, ri in zip(scores, ids, strict=True)
        ]
