"""The FAISS item index: exact and approximate search, filters, recall, versions."""

import numpy as np
import pytest

from recsys.config import IndexConfig
from recsys.index.ann import ItemIndex, choose_kind, exact_top_k, recall_at_k


def clustered(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(max(4, n // 100), dim))
    return (centers[rng.integers(len(centers), size=n)] + 0.3 * rng.normal(size=(n, dim))).astype(np.float32)


def test_flat_search_is_exact_and_answers_item_indices():
    v = clustered(500, 16)
    q = clustered(20, 16, seed=1)
    scores, ids = ItemIndex.build(v, IndexConfig(kind="flat")).search(q, 10)
    brute = q @ v.T
    expected = np.argsort(-brute, axis=1)[:, :10] + 1  # row i-1 is item index i
    assert (ids == expected).all()
    np.testing.assert_allclose(scores, np.take_along_axis(brute, expected - 1, axis=1), rtol=1e-5)


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_indexes_reach_their_recall_on_clustered_vectors(kind):
    v = clustered(4000, 16)
    q = clustered(100, 16, seed=2)
    cfg = IndexConfig(kind=kind, ivf_nprobe=16, hnsw_ef_search=256)
    found = ItemIndex.build(v, cfg).search(q, 100)[1]
    assert recall_at_k(found, exact_top_k(v, q, 100)) >= 0.95


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_filters_return_only_allowed_items_and_still_k_of_them(kind):
    v = clustered(2000, 8)
    index = ItemIndex.build(v, IndexConfig(kind=kind, ivf_nprobe=64))
    allowed = np.zeros(2000, dtype=bool)
    allowed[::5] = True
    q = clustered(3, 8, seed=3)
    _, ids = index.search(q, 20, allowed)
    assert (ids > 0).all() and allowed[ids - 1].all()
    exact = np.argsort(-(q @ v[allowed].T), axis=1)[:, :20]
    exact_ids = np.flatnonzero(allowed)[exact] + 1
    assert recall_at_k(ids, exact_ids) >= 0.9


def test_fewer_allowed_items_than_k_pads_with_zero():
    v = clustered(300, 8)
    allowed = np.zeros(300, dtype=bool)
    allowed[[3, 50, 200]] = True
    _, ids = ItemIndex.build(v, IndexConfig(kind="flat")).search(v[:1], 10, allowed)
    assert sorted(ids[0][:3]) == [4, 51, 201] and (ids[0][3:] == 0).all()


def test_auto_kind_is_exact_for_small_catalogs():
    cfg = IndexConfig(exact_below=1000)
    assert choose_kind(cfg, 999) == "flat" and choose_kind(cfg, 1000) == "hnsw"
    assert choose_kind(IndexConfig(kind="ivf"), 10) == "ivf"


def test_save_and_load_round_trip(tmp_path):
    v = clustered(600, 8)
    index = ItemIndex.build(v, IndexConfig(kind="hnsw"))
    index.save(tmp_path)
    loaded = ItemIndex.load(tmp_path, "hnsw", IndexConfig())
    assert loaded.max_norm == index.max_norm and loaded.num_items == 600
    q = clustered(5, 8, seed=4)
    assert (loaded.search(q, 10)[1] == index.search(q, 10)[1]).all()
    assert ItemIndex.load(tmp_path, "hnsw", IndexConfig(hnsw_ef_search=64)).index.hnsw.efSearch == 64
    with pytest.raises(ValueError, match="holds a hnsw index"):
        ItemIndex.load(tmp_path, "ivf")


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_l2_indexes_answer_true_inner_products(kind):
    v = clustered(1000, 8)
    q = clustered(4, 8, seed=5)
    scores, ids = ItemIndex.build(v, IndexConfig(kind=kind)).search(q, 5)
    np.testing.assert_allclose(scores, np.einsum("bh,bkh->bk", q, v[ids - 1]), atol=1e-4)
