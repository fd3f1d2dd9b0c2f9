"""The FAISS index kinds behind one small interface, all keyed by ragtune's own int64 chunk ids.

`flat` is exact (inner product on normalised vectors = cosine). `hnsw` and `ivf` are approximate
and meant for large corpora: HNSW cannot remove vectors, so the index keeps removed chunks as
tombstones and rebuilds HNSW from the stored vectors once enough pile up; IVF is trained on the
vectors present when it is (re)built.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import faiss as _faiss
import numpy as np

from ragtune.core.config import RetrievalConfig

faiss: Any = _faiss  # the SWIG module's stubs miss most of its classes


def build(config: RetrievalConfig, dim: int, ids: np.ndarray, vecs: np.ndarray) -> Any:
    """A new index of `config.index_type` holding `vecs` under `ids`."""
    if config.index_type == "hnsw":
        hnsw = faiss.IndexHNSWFlat(dim, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = config.hnsw_ef_construction
        index: Any = faiss.IndexIDMap2(hnsw)
    elif config.index_type == "ivf" and len(ids):
        # about 39 training points per list is FAISS's own floor; a small corpus gets fewer lists
        nlist = max(1, min(config.ivf_nlist, len(ids) // 39))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(vecs)
    else:
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    add(index, ids, vecs)
    return index


def can_remove(index: Any) -> bool:
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else index
    return not isinstance(inner, faiss.IndexHNSW)


def remove(index: Any, ids: np.ndarray) -> None:
    if len(ids):
        index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64))


def add(index: Any, ids: np.ndarray, vecs: np.ndarray) -> None:
    if len(ids):
        index.add_with_ids(np.ascontiguousarray(vecs, dtype=np.float32), np.ascontiguousarray(ids, dtype=np.int64))


def search(
    index: Any, config: RetrievalConfig, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, ids) per query; `allowed` restricts the search to those chunk ids (filters)."""
    keep: list[Any] = []  # the selector reads this array: it must outlive the search call
    sel = None
    if allowed is not None:
        arr = np.ascontiguousarray(allowed, dtype=np.int64)
        keep.append(arr)
        sel = faiss.IDSelectorBatch(len(arr), faiss.swig_ptr(arr))
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else index
    if isinstance(inner, faiss.IndexHNSW):
        params: Any = faiss.SearchParametersHNSW(efSearch=max(config.hnsw_ef_search, k))
    elif isinstance(inner, faiss.IndexIVF):
        params = faiss.SearchParametersIVF(nprobe=config.ivf_nprobe)
    else:
        params = faiss.SearchParameters()
    if sel is not None:
        params.sel = sel
    scores, ids = index.search(np.ascontiguousarray(queries, dtype=np.float32), k, params=params)
    del keep
    return scores, ids


def read(path: Path) -> Any:
    return faiss.read_index(str(path))


def write(index: Any, target: Path) -> str:
    """Write atomically (a reader or a crash sees the old file or the whole new one, never half);
    returns the file's sha256, which the store records so a corrupted file is never used."""
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    faiss.write_index(index, str(tmp))
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    digest = checksum(tmp)
    os.replace(tmp, target)
    return digest


def checksum(path: Path) -> str:
    """sha256 of a file, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
