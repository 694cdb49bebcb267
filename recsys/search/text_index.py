"""Item text vectors in the versioned index: the index stage embeds every item's text with the
search encoder and stores a FAISS index of them beside the recommender's, in the same version:

    <root>/indexes/<run_name>/<version>/text/   items.faiss, ann.json, vectors.npy

The manifest's `search` section names the encoder (fine-tuned by the search stage on the logs'
searches, adapted to the catalog's pseudo-queries when `search.adapt` is on and its safeguard
passed, or the pretrained MiniLM) and the recall@100 of the text index against
exact search, measured at build time on real queries (the logs' held-out searches, else item texts).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recsys.config import RecsysConfig
from recsys.data.dataset import PreparedDataset
from recsys.index.ann import ItemIndex, choose_kind, recall_against_exact
from recsys.search.encoder import TextEncoder
from recsys.search.examples import encoder_for, search_examples
from recsys.search.query_encoder import build_query_encoder

TEXT_FOLDER = "text"
VECTORS_FILE = "vectors.npy"


def catalog_texts(dataset: PreparedDataset) -> list[str]:
    """The vocabulary's item texts in item-index order (row i-1 = item index i); a time split's cold
    items are not in the served catalog (a product reaches it through POST /items)."""
    from recsys.data.text_vectors import catalog_texts as id_and_text

    return id_and_text(dataset, include_cold=False)[1]


@dataclass
class TextIndex:
    index: ItemIndex
    vectors: np.ndarray  # (N, D) unit vectors, row i-1 = item index i
    meta: dict  # the manifest's `search` section
    query_encoder: Path | None = None  # the exported ONNX query encoder (recsys.search.query_encoder), if any

    def save(self, folder: Path) -> None:
        import shutil

        (folder / TEXT_FOLDER).mkdir()
        self.index.save(folder / TEXT_FOLDER)
        np.save(folder / TEXT_FOLDER / VECTORS_FILE, self.vectors)
        if self.query_encoder is not None:
            shutil.copyfile(self.query_encoder, folder / TEXT_FOLDER / self.query_encoder.name)
            shutil.rmtree(self.query_encoder.parent, ignore_errors=True)  # the build's scratch folder
            self.query_encoder = folder / TEXT_FOLDER / self.query_encoder.name


def build_text_index(cfg: RecsysConfig, dataset: PreparedDataset) -> TextIndex:
    """The catalog's item texts embedded and indexed, with the recall measured."""
    path, source = encoder_for(cfg, dataset)
    encoder = TextEncoder(path)
    started = time.perf_counter()
    texts = catalog_texts(dataset)
    vectors = encoder.encode(texts, max_tokens=cfg.search.max_tokens).numpy()
    encode_s = time.perf_counter() - started
    kind = choose_kind(cfg.index, len(vectors))
    index = ItemIndex.build(vectors, cfg.index, kind)
    held_out = search_examples(dataset, ("valid", "test"), ["query"])["query"]
    rng = np.random.default_rng(cfg.index.seed)
    if held_out:
        queries, query_source = [held_out[i] for i in rng.permutation(len(held_out))[: cfg.index.recall_queries]], "held-out searches"
    else:
        queries, query_source = [texts[i] for i in rng.permutation(len(texts))[: cfg.index.recall_queries]], "item texts"
    q = encoder.encode(queries, max_tokens=cfg.search.max_tokens).numpy()
    recall = recall_against_exact(index, vectors, q, 100)
    scratch = Path(tempfile.mkdtemp(prefix="query-encoder-"))
    query_encoder = build_query_encoder(encoder, cfg.search.query_runtime, scratch, queries, cfg.search.max_tokens,
                                        cfg.search.query_min_cosine)
    meta = {
        "encoder_path": str(Path(path).resolve()),
        "encoder": source,
        "kind": kind,
        "items": len(vectors),
        "dim": int(vectors.shape[1]),
        "recall_at_100": round(recall, 5),
        "recall_queries": f"{len(queries)} {query_source}",
        "encode_s": round(encode_s, 3),
        "query_encoder": query_encoder,
    }
    return TextIndex(index, vectors, meta, scratch / query_encoder["file"] if "file" in query_encoder else None)


def load_text_index(folder: Path, meta: dict, index_cfg) -> tuple[ItemIndex, np.ndarray]:
    text = Path(folder) / TEXT_FOLDER
    return ItemIndex.load(text, meta["kind"], index_cfg), np.load(text / VECTORS_FILE)


def load_query_encoder(folder: Path, meta: dict):
    """The version's ONNX query encoder, or None (torch: the item encoder also encodes queries;
    versions built before the export have no entry)."""
    from recsys.search.query_encoder import OnnxQueryEncoder

    entry = meta.get("query_encoder") or {}
    if "file" not in entry:
        return None
    return OnnxQueryEncoder(Path(folder) / TEXT_FOLDER / entry["file"], meta["encoder_path"])
