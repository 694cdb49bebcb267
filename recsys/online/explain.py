"""What drove an item's score, from the model itself:
- history: each history item's occlusion effect (score with it minus score without it), on the
  score the response ranks by;
- attributes: the exact additive share of each of the item's attributes (and its id) in the
  retrieval score u·v, since v = id vector + mean of its attribute vectors."""

from __future__ import annotations

import numpy as np
import torch

from recsys.online.catalog import Catalog
from recsys.online.rank import CTRRanker
from recsys.online.retrieve import Retriever


@torch.no_grad()
def explain(retriever: Retriever, ranker: CTRRanker | None, catalog: Catalog, history: list[int], item: int,
            context: tuple, top: int = 3) -> dict:
    model = retriever.model
    history = history[-model.config.max_seq_len :]
    variants = [history] + [history[:j] + history[j + 1 :] for j in range(len(history))]
    variants = [v or [model.config.pad_index] for v in variants]
    if ranker is not None:
        scores = np.asarray([s[0] for s in ranker.logits(variants, [[item]] * len(variants), [context] * len(variants))])
    else:
        scores = retriever.user_vectors(variants) @ retriever.vectors.of([item])[0]
    effects = scores[0] - scores[1:]
    order = np.argsort(-effects, kind="stable")[:top]
    u = torch.as_tensor(retriever.user_vectors([history])[0])
    emb = model.items
    fresh = item > retriever.n_model
    parts = [{"attribute": "item id", "contribution": 0.0 if fresh or not emb.use_ids else float(u @ emb.id_embedding.weight[item])}]
    if emb.use_attributes:
        attrs = torch.as_tensor(catalog.rows[item]["attribute_indices"]) if fresh else emb.item_attributes[item]
        present = attrs[attrs > 0]
        for a in present.tolist():
            share = float(u @ emb.attribute_embedding.weight[a]) / len(present)
            parts.append({"attribute": catalog.attribute_name.get(a, f"attribute {a}"), "contribution": share})
    if emb.use_text:
        text = catalog.rows[item].get("text_vector") if fresh else emb.item_text[item]
        if text is not None:  # a new item without text has no text share
            parts.append({"attribute": "text", "contribution": float(u @ emb.text_projection(torch.as_tensor(text)))})
    return {
        "score_explained": "ctr_logit" if ranker is not None else "retrieval",
        "history": [{"item_id": catalog.rows[history[j]]["item_id"], "effect": float(effects[j])} for j in order if history[j] in catalog.rows],
        "attributes": sorted(parts, key=lambda p: -abs(p["contribution"])),
    }
