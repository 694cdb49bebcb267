"""The ONNX Runtime query encoder: parity with the torch encoder, the build's safeguard, and that
search ranks the same with it."""

import numpy as np
import pytest

from recsys.search.engine import SearchIndex, SearchWeights
from recsys.search.query_encoder import OnnxQueryEncoder, build_query_encoder, export_onnx

QUERIES = [
    "red lipstick", "vitamin c serum for face", "hair dryer", "shampoo", "moisturizer spf 30 oil free",
    "nail polish remover", "eye cream for dark circles", "lavender body wash", "12 oz conditioner", "xr-500 trimmer",
    "gift for her", "no fragrance lotion", "matte foundation light", "charcoal face mask", "argan oil",
    "retro spot red", "jumbo bag pink polkadot", "wooden heart christmas", "vintage tea set", "glass t-light holder",
]
ITEMS = [
    {"item_index": i + 1, "title": t, "category": c, "brand": None, "attributes": []}
    for i, (t, c) in enumerate([("Matte Red Lipstick", "makeup"), ("Hydrating Shampoo", "hair"), ("Night Eye Cream", "skin"),
                                ("Vintage Tea Set", "home"), ("Jumbo Bag Pink Polkadot", "bags"), ("Argan Oil Hair Serum", "hair")])
]


@pytest.fixture(scope="module")
def encoder():
    from recsys.search.encoder import TextEncoder

    return TextEncoder()


@pytest.fixture(scope="module")
def onnx_fp32(encoder, tmp_path_factory):
    return OnnxQueryEncoder(export_onnx(encoder, tmp_path_factory.mktemp("onnx")), encoder.path)


def test_onnx_export_gives_the_torch_encoders_vectors(encoder, onnx_fp32):
    reference = encoder.encode(QUERIES, max_tokens=48).numpy()
    got = onnx_fp32.encode(QUERIES, max_tokens=48)
    assert got.shape == reference.shape and got.dtype == np.float32
    cos = (reference * got).sum(1)
    assert cos.min() >= 0.999, cos.min()  # the parity bar is 0.99
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert onnx_fp32.encode([], max_tokens=48).shape == (0, encoder.dim)
    # batching and padding do not change a query's vector
    np.testing.assert_allclose(onnx_fp32.encode(QUERIES[:1], max_tokens=48)[0], got[0], atol=1e-5)


def test_search_ranks_the_same_on_either_runtime(encoder, onnx_fp32):
    torch_index = SearchIndex.from_items(ITEMS, encoder, SearchWeights(candidates=6))
    onnx_index = SearchIndex(torch_index.texts, torch_index.vectors, encoder, SearchWeights(candidates=6), query_encoder=onnx_fp32)
    for query in ("lipstick", "tea set", "hair oil", "pink bag", "cream for eyes"):
        q_torch, q_onnx = torch_index.encode_queries([query])[0], onnx_index.encode_queries([query])[0]
        a = [h.item for h in torch_index.rank(query, q_torch, 3, "hybrid")]
        b = [h.item for h in onnx_index.rank(query, q_onnx, 3, "hybrid")]
        assert a == b, query
    # a new item's vector comes from the item encoder whichever runtime encodes queries
    new = onnx_index.add("Rose Hand Cream")
    np.testing.assert_allclose(onnx_index.vectors[new - 1], encoder.encode(["Rose Hand Cream"], max_tokens=48).numpy()[0], atol=1e-6)


def test_the_build_keeps_torch_when_the_export_misses_the_parity_bar(encoder, tmp_path):
    kept = build_query_encoder(encoder, "onnx_int8", tmp_path / "int8", QUERIES, 48, min_cosine=0.99999)
    assert kept["runtime"] == "torch" and kept["refused"] == "onnx_int8" and "query_min_cosine" in kept["reason"]
    assert kept["parity"]["min_cosine"] < 0.99999 and not (tmp_path / "int8" / "query_encoder.onnx").exists()
    built = build_query_encoder(encoder, "onnx", tmp_path / "fp32", QUERIES, 48, min_cosine=0.99)
    assert built["runtime"] == "onnx" and built["parity"]["min_cosine"] >= 0.999 and (tmp_path / "fp32" / built["file"]).is_file()
    assert build_query_encoder(encoder, "torch", tmp_path / "t", QUERIES, 48, 0.99) == {"runtime": "torch"}
    with pytest.raises(ValueError, match="query_runtime"):
        build_query_encoder(encoder, "tensorrt", tmp_path / "x", QUERIES, 48, 0.99)
