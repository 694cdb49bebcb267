"""Start a shop's model from one pretrained on other data (e.g. the pooled logs of several shops).

The two models share an architecture but not a vocabulary. Everything that does not depend on the
vocabulary is copied as is: the transformer, the position embeddings, the norms, the text
projection. The item and attribute tables are copied row by row where the ids match: a shop item
`X` is the pooled item `<shop>/X` (recsys/data/pooled.py), an attribute is matched by its name;
rows with no match keep their fresh initialisation. The per-item frozen tables (attribute indices,
text vectors) come from the shop's own dataset, never from the source model.
"""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import torch

from recsys.artifacts import Dataset

VOCAB_TABLES = ("items.id_embedding.weight", "items.attribute_embedding.weight")
FROZEN_TABLES = ("items.item_attributes", "items.item_text")


def _ids(dataset: Dataset) -> dict[str, int]:
    items = pq.read_table(dataset.path / "items.parquet", columns=["item_id", "item_index"]).to_pydict()
    return dict(zip(items["item_id"], items["item_index"], strict=True))


def _attributes(dataset: Dataset) -> dict[str, int]:
    rows = pq.read_table(dataset.path / "attributes.parquet").to_pydict()
    return dict(zip(rows["attribute"], rows["attribute_index"], strict=True))


def row_map(source: dict[str, int], target: dict[str, int], prefix: str = "") -> tuple[np.ndarray, np.ndarray]:
    """(target rows, source rows) of the ids both sides know; `prefix` + a target id is its source id."""
    pairs = [(t, source[prefix + key]) for key, t in target.items() if prefix + key in source]
    if not pairs:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    dst, src = zip(*pairs, strict=True)
    return np.asarray(dst, np.int64), np.asarray(src, np.int64)


def transfer_weights(source_model, source_data: Dataset, target_model, target_data: Dataset, prefix: str) -> dict:
    """Copy `source_model`'s weights into `target_model` (see the module docstring); returns what was
    matched, for the export's metadata."""
    src, dst = source_model.state_dict(), target_model.state_dict()
    mismatched = [k for k in dst if k in src and k not in VOCAB_TABLES + FROZEN_TABLES and src[k].shape != dst[k].shape]
    missing = [k for k in dst if k not in src and k not in FROZEN_TABLES]
    if mismatched or missing:
        raise ValueError(f"the pretrained model's architecture differs from this stage's model config: shapes differ for "
                         f"{mismatched[:5]}, absent in the source: {missing[:5]}; pretrain with the same model section")
    update = {k: v.clone() for k, v in src.items() if k in dst and k not in VOCAB_TABLES + FROZEN_TABLES}
    item_dst, item_src = row_map(_ids(source_data), _ids(target_data), prefix)
    table = dst["items.id_embedding.weight"].clone()
    table[torch.as_tensor(item_dst)] = src["items.id_embedding.weight"][torch.as_tensor(item_src)]
    table[-1] = src["items.id_embedding.weight"][-1]  # [MASK]
    update["items.id_embedding.weight"] = table
    matched = {"items": int(len(item_dst)), "of_items": int(target_model.config.num_items)}
    if "items.attribute_embedding.weight" in dst and "items.attribute_embedding.weight" in src:
        attr_dst, attr_src = row_map(_attributes(source_data), _attributes(target_data))
        attrs = dst["items.attribute_embedding.weight"].clone()
        attrs[torch.as_tensor(attr_dst)] = src["items.attribute_embedding.weight"][torch.as_tensor(attr_src)]
        update["items.attribute_embedding.weight"] = attrs
        matched["attributes"] = int(len(attr_dst))
    target_model.load_state_dict(update, strict=False)
    return matched
