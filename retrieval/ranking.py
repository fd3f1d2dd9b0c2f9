"""Pure ranking functions over `(chunk id, score)` lists: exact dense top-k, RRF fusion, MMR.

They take vectors and rankings, not an index, so any backend can rank the same way and each
step can be tested on a few hand-made vectors.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Ranking = list[tuple[int, float]]  # (chunk id, score), best first


def exact_top_k(queries: np.ndarray, ids: np.ndarray, vecs: np.ndarray, k: int) -> list[Ranking]:
    """Top-k by inner product of every query against `vecs` (stored under `ids`), exact, best first."""
    if not len(ids):
        return [[] for _ in queries]
    sims = queries @ vecs.T
    top = min(k, len(ids))
    out = []
    for row in sims:
        best = np.argpartition(-row, top - 1)[:top]
        best = best[np.argsort(-row[best])]
        out.append([(int(ids[j]), float(row[j])) for j in best])
    return out


def rrf_fuse(weighted: Sequence[tuple[float, Ranking]], rrf_k: int) -> Ranking:
    """Reciprocal rank fusion: a chunk ranked high by any list rises; scores need no calibration.

    Each `(weight, ranking)` adds `weight / (rrf_k + rank)` to the chunks it ranks; ties go to the lower id.
    """
    fused: dict[int, float] = {}
    for weight, ranking in weighted:
        for rank, (cid, _) in enumerate(ranking, 1):
            fused[cid] = fused.get(cid, 0.0) + weight / (rrf_k + rank)
    return sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))


def mmr(query: np.ndarray, ranked: Ranking, vecs: np.ndarray, k: int, lam: float) -> Ranking:
    """Maximal marginal relevance: trade a little relevance for hits that do not repeat each other.

    `vecs[i]` is the (normalised) vector of `ranked[i]`; `lam` 1 keeps relevance order, 0 only diversity.
    """
    if len(ranked) <= 1:
        return ranked
    rel = vecs @ query
    chosen: list[int] = []
    left = list(range(len(ranked)))
    while left and len(chosen) < k:
        if chosen:
            redundancy = (vecs[left] @ vecs[chosen].T).max(axis=1)
            scores = lam * rel[left] - (1 - lam) * redundancy
        else:
            scores = rel[left]
        chosen.append(left.pop(int(np.argmax(scores))))
    return [ranked[i] for i in chosen]
