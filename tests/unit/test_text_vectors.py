"""Item text vectors: a catalog without titles stops with the setting named; an item without text
gets a zero vector and is listed; the artifact is reused for the same encoder and texts."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys.artifacts import Dataset
from recsys.data.text_vectors import TextFeaturesError, item_text_vectors


def dataset(tmp_path, titles, categories=None):
    folder = tmp_path / "ds"
    folder.mkdir()
    n = len(titles)
    (folder / "manifest.json").write_text(json.dumps({"vocab": {"num_items": n, "num_attributes": 0}}))
    pq.write_table(pa.table({
        "item_index": pa.array(range(1, n + 1), pa.int32()), "item_id": [f"i{i}" for i in range(n)],
        "title": pa.array(titles, pa.string()), "category": pa.array(categories or [None] * n, pa.string()),
        "brand": pa.nulls(n, pa.string()), "attributes": pa.array([[] for _ in range(n)], pa.list_(pa.string())),
    }), folder / "items.parquet")
    return Dataset(folder)


def test_a_catalog_without_titles_names_the_setting(tmp_path):
    with pytest.raises(TextFeaturesError, match="model.text_features is true .* no titles"):
        item_text_vectors(tmp_path / "root", dataset(tmp_path, [None, None], ["soap", "gel"]), 48)


def test_an_item_without_text_gets_a_zero_vector_and_is_listed(tmp_path):
    ds = dataset(tmp_path, ["WHITE HANGING HEART T-LIGHT HOLDER", None, "RED TOADSTOOL LED NIGHT LIGHT"])
    vectors = item_text_vectors(tmp_path / "root", ds, 48)
    table = vectors.table()
    assert table.shape == (5, 384) and table.dtype == np.float32
    assert np.allclose(np.linalg.norm(table[[1, 3]], axis=1), 1.0, atol=1e-5)  # unit vectors of the titled items
    assert not table[[0, 2, 4]].any()  # padding, the item without text, [MASK]
    assert vectors.manifest["items_without_text"] == 1 and vectors.manifest["without_text"] == ["i1"]
    again = item_text_vectors(tmp_path / "root", ds, 48)
    assert again.path == vectors.path  # keyed by encoder and texts: embedded once
    assert item_text_vectors(tmp_path / "root", ds, 16).path != vectors.path


def test_the_index_manifest_flags_the_items_without_text(tmp_path):
    import torch

    from recsys.index.build import text_feature_summary
    from recsys.models import SeqRecConfig, SeqRecModel

    ds = dataset(tmp_path, ["soap", None, "gel"])
    model = SeqRecModel(SeqRecConfig(num_items=3, num_attributes=0, hidden_size=8, num_heads=2, text_embedding_dim=4,
                                     text_encoder="enc"))
    table = torch.ones(5, 4)
    table[2] = 0.0  # item index 2 (i1) had no text: a zero vector
    model.set_item_text_embeddings(table)
    summary = text_feature_summary(model, ds)
    assert summary["items_without_text"] == 1 and summary["without_text"] == ["i1"] and summary["encoder"] == "enc"
    assert text_feature_summary(SeqRecModel(SeqRecConfig(num_items=3, num_attributes=0, hidden_size=8, num_heads=2)), ds) is None
