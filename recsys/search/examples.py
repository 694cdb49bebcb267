"""The logs' searches as the search stage and the index read them: (query, clicked item) examples
per split, their item texts, and which encoder embeds a catalog (the fine-tuned one when the logs
hold searches, else the bundled MiniLM)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from recsys.artifacts import ArtifactStore
from recsys.config import RecsysConfig
from recsys.data.dataset import PreparedDataset
from recsys.search.encoder import row_text

STAGE = "search"


def search_examples(dataset: PreparedDataset, splits: tuple[str, ...], columns: list[str]) -> dict:
    """Columns of examples/search rows in `splits` (empty lists when the logs hold no searches)."""
    folder = dataset.split_dir("examples/search")
    if not Path(folder).exists():
        return {c: [] for c in columns}
    return pq.read_table(folder, columns=columns, filters=[("split", "in", list(splits))]).to_pydict()


def search_pairs(dataset: PreparedDataset, split: str) -> list[dict]:
    """(query, item index, item text) of one split of examples/search ([] when the logs hold no searches)."""
    ex = search_examples(dataset, (split,), ["query", "item"])
    if not ex["item"]:
        return []
    items = pq.read_table(dataset.path / "items.parquet", columns=["item_index", "title", "category", "brand", "attributes"]).to_pylist()
    texts = {r["item_index"]: row_text(r) for r in items}
    return [{"query": q, "item": int(i), "text": texts[i]} for q, i in zip(ex["query"], ex["item"], strict=True) if i in texts]


def encoder_for(cfg: RecsysConfig, dataset: PreparedDataset) -> tuple[Path, str]:
    """(encoder folder, "fine-tuned" | "adapted" | "pretrained") for a catalog: the latest
    search-stage export trained on this dataset (on its logs' searches, or adapted to its catalog's
    pseudo-queries when its safeguard passed); the bundled MiniLM when there was nothing to
    fine-tune on, or the adapted encoder scored below it on its held-out pseudo-queries."""
    from recsys.search.encoder import pretrained_path

    store = ArtifactStore.of(cfg)
    found = store.latest(STAGE, trained_on=dataset, required=False)
    if found is not None:
        extra = found.meta.extra
        if "safeguard" not in extra:
            return found.path, "fine-tuned"
        if extra["safeguard"]["ship"] and cfg.search.adapt.enabled:  # adaptation switched off: back to the pretrained
            return found.path, "adapted"
        return pretrained_path(), "pretrained"
    if search_examples(dataset, ("train",), ["item"])["item"] or cfg.search.adapt.enabled:
        raise FileNotFoundError(
            f"{dataset.path} has search logs (or search.adapt is on) but no search encoder was fine-tuned on it under "
            f"{store.folder(STAGE)}; "
            "run the search stage first (recsys search --config <file>), or set search.enabled: false"
        )
    return pretrained_path(), "pretrained"
