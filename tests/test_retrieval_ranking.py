"""The pure ranking functions on tiny hand-made rankings and vectors: RRF weights, MMR's trade-off, exact top-k."""

import numpy as np
import pytest

from ragtune.retrieval.ranking import exact_top_k, mmr, rrf_fuse


def _unit(*rows: list[float]) -> np.ndarray:
    vecs = np.array(rows, dtype=np.float32)
    return vecs / np.linalg.norm(vecs, axis=1, keepdims=True)


def test_rrf_rewards_agreement_and_follows_the_weights():
    dense = [(1, 0.9), (2, 0.8), (3, 0.7)]
    lexical = [(4, 12.0), (2, 9.0), (5, 1.0)]
    equal = rrf_fuse([(1.0, dense), (1.0, lexical)], rrf_k=60)
    # 2 is second in both lists, so it beats 1 and 4, each first in only one (tied: the lower id first)
    assert [cid for cid, _ in equal] == [2, 1, 4, 3, 5]
    assert equal[0][1] == pytest.approx(2 / 62) and equal[1][1] == pytest.approx(1 / 61)
    # only ranks count: lexical's BM25 12.0 against dense's 0.9 changes nothing; the weights do
    dense_heavy = rrf_fuse([(3.0, dense), (1.0, lexical)], rrf_k=60)
    assert [cid for cid, _ in dense_heavy] == [2, 1, 3, 4, 5]
    lexical_only = rrf_fuse([(0.0, dense), (1.0, lexical)], rrf_k=60)
    assert [cid for cid, _ in lexical_only] == [4, 2, 5, 1, 3]
    assert rrf_fuse([], rrf_k=60) == []


def test_rrf_k_sets_how_much_a_first_place_is_worth():
    dense = [(1, 0.9), (6, 0.8), (7, 0.7), (9, 0.6)]
    lexical = [(2, 9.0), (8, 8.0), (10, 7.0), (9, 6.0)]
    # fourth in both lists: above two first places when rrf_k is large, below them when it is small
    assert [cid for cid, _ in rrf_fuse([(1.0, dense), (1.0, lexical)], rrf_k=60)][:3] == [9, 1, 2]
    assert [cid for cid, _ in rrf_fuse([(1.0, dense), (1.0, lexical)], rrf_k=1)][:3] == [1, 2, 9]


def test_mmr_trades_relevance_for_diversity():
    query = _unit([1.0, 0.0, 0.0])[0]
    # 10 and 11 are near copies, both very relevant; 12 is less relevant and says something else
    vecs = _unit([1.0, 0.10, 0.0], [1.0, 0.12, 0.0], [0.8, 0.0, 0.6])
    ranked = [(10, 0.99), (11, 0.98), (12, 0.80)]
    assert [cid for cid, _ in mmr(query, ranked, vecs, k=2, lam=1.0)] == [10, 11]  # relevance only
    assert [cid for cid, _ in mmr(query, ranked, vecs, k=2, lam=0.9)] == [10, 11]  # mostly relevance
    assert [cid for cid, _ in mmr(query, ranked, vecs, k=2, lam=0.3)] == [10, 12]  # the copy is passed over
    assert mmr(query, ranked, vecs, k=3, lam=0.3) == [(10, 0.99), (12, 0.80), (11, 0.98)]  # scores unchanged
    assert mmr(query, ranked[:1], vecs[:1], k=3, lam=0.3) == ranked[:1]


def test_exact_top_k_orders_by_inner_product_and_caps_at_the_candidates():
    ids = np.array([7, 8, 9], dtype=np.int64)
    vecs = _unit([1.0, 0.0], [0.6, 0.8], [0.0, 1.0])
    queries = _unit([0.0, 1.0], [1.0, 0.1])
    top = exact_top_k(queries, ids, vecs, k=2)
    assert [[cid for cid, _ in r] for r in top] == [[9, 8], [7, 8]]
    assert top[0][0][1] == pytest.approx(1.0)
    assert [len(r) for r in exact_top_k(queries, ids, vecs, k=10)] == [3, 3]
    assert exact_top_k(queries, ids[:0], vecs[:0], k=2) == [[], []]
