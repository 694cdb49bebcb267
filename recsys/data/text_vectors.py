"""Item text vectors for the recommender: every item's text (title, category, brand, attribute
values) embedded once by the pretrained MiniLM, stored as a versioned artifact keyed by the encoder
and the catalog's texts, so training, the index and serving share the same vectors:

    <root>/text_vectors/<key>/vectors.npy    (N + 2 + M, D) float32; row i = item index i (0 and N+1
                                             zero), rows N + 2.. the M cold items of a time split
    <root>/text_vectors/<key>/manifest.json  encoder, items, cold items, dim, the items without text

An item without text gets a zero vector (its id and attributes carry it alone) and is listed in
the manifest. The model's projection was trained against this encoder, so a new product's vector
at serving time comes from the same encoder (recsys.online.cold_start).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from recsys.artifacts import Dataset, atomic_folder
from recsys.search.encoder import (
    PACKAGE as TEXT_ENCODER,  # the pretrained encoder every text vector comes from
)

VECTORS_FILE, MANIFEST = "vectors.npy", "manifest.json"


class TextFeaturesError(ValueError):
    """model.text_features is on but the catalog has no text to embed."""


@dataclass(frozen=True)
class TextVectors:
    path: Path
    manifest: dict

    def table(self) -> np.ndarray:
        """(N + 2, D) float32, row i = item index i: what the model's frozen buffer holds."""
        return np.load(self.path / VECTORS_FILE, mmap_mode="r")[: self.manifest["items"] + 2].copy()

    def cold_table(self) -> np.ndarray:
        """(M, D) float32, row k = cold item index N + 2 + k (recsys/data/cold.py)."""
        return np.load(self.path / VECTORS_FILE, mmap_mode="r")[self.manifest["items"] + 2 :].copy()


def catalog_texts(dataset: Dataset, include_cold: bool = True) -> tuple[list[str], list[str]]:
    """(item ids, item texts) in item-index order: the vocabulary (row i - 1 = item index i), then,
    with `include_cold`, the cold items of a time split (their indices skip [MASK], N + 1)."""
    from recsys.search.encoder import row_text

    columns = ["item_index", "item_id", "title", "category", "brand", "attributes"]
    rows = pq.read_table(dataset.path / "items.parquet", columns=columns).sort_by("item_index").to_pylist()
    if include_cold and (dataset.path / "cold_items.parquet").is_file():
        rows += pq.read_table(dataset.path / "cold_items.parquet", columns=columns).sort_by("item_index").to_pylist()
    return [r["item_id"] for r in rows], [row_text(r) for r in rows]


def item_text_vectors(root: Path, dataset: Dataset, max_tokens: int) -> TextVectors:
    """The text vectors of a dataset's catalog, embedded now or read from the artifact store."""
    from recsys.search.encoder import TextEncoder

    titles = pq.read_table(dataset.path / "items.parquet", columns=["title"])["title"]
    if titles.null_count == len(titles):
        raise TextFeaturesError(
            f"model.text_features is true but the catalog of {dataset.path} has no titles (the text the recommender "
            "embeds); set model.text_features: false for this data, or give the catalog a title column")
    ids, texts = catalog_texts(dataset)
    known = dataset.num_items
    # N in the key: the same texts split differently between vocabulary and cold items are another table
    digest = hashlib.sha256(json.dumps([TEXT_ENCODER, max_tokens, known, texts]).encode()).hexdigest()[:16]
    final = Path(root) / "text_vectors" / f"{TEXT_ENCODER}-{digest}"
    if (final / MANIFEST).is_file():
        return TextVectors(final, json.loads((final / MANIFEST).read_text()))
    encoder = TextEncoder()
    present = [i for i, t in enumerate(texts) if t.strip()]
    started = time.perf_counter()
    encoded = encoder.encode([texts[i] for i in present], max_tokens=max_tokens).numpy() if present else np.zeros((0, encoder.dim))
    table = np.zeros((len(texts) + 2, encoder.dim), dtype=np.float32)
    rows = np.asarray(present, dtype=np.int64)
    table[np.where(rows < known, rows + 1, rows + 2)] = encoded  # cold items come after [MASK]
    missing = [ids[i] for i in range(len(texts)) if not texts[i].strip()]
    manifest = {"encoder": TEXT_ENCODER, "max_tokens": max_tokens, "items": known, "cold_items": len(texts) - known,
                "dim": int(encoder.dim),
                "dataset": str(dataset.path), "items_without_text": len(missing), "without_text": missing[:1000],
                "encode_s": round(time.perf_counter() - started, 1)}
    with atomic_folder(final) as scratch:
        np.save(scratch / VECTORS_FILE, table)
        (scratch / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return TextVectors(final, manifest)
