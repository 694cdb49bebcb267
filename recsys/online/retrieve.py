"""Retrieval: the sequence model's user vector, then the ANN index over the trained items' vectors,
with exact scores beside it for items added while serving (they are not in the index)."""

from __future__ import annotations

import numpy as np
import torch

from recsys.index.ann import ItemIndex
from recsys.online.cold_start import cold_vector
from recsys.search.engine import fit_mask


class ItemVectors:
    """(N, H) vectors of the trained items plus the cold-start vectors of items added since; row of
    item index i is i - 1."""

    def __init__(self, seqrec):
        """From a SeqRecModel (the retrieval model, or the CTR ranker's encoder)."""
        self.items_module = seqrec.items
        with torch.no_grad():
            self.trained = seqrec.item_vectors().numpy()
        self.fresh = np.zeros((0, self.trained.shape[1]), np.float32)

    def add(self, attribute_ids: list[int], text_vector: np.ndarray | None = None) -> None:
        self.fresh = np.vstack([self.fresh, cold_vector(self.items_module, attribute_ids, text_vector)])

    def of(self, indices) -> np.ndarray:
        """(len, H) vectors of any served items, new ones included."""
        n = len(self.trained)
        idx = np.asarray(indices, dtype=np.int64)
        out = self.trained[np.minimum(idx, n) - 1]
        new = idx > n
        if new.any():
            out[new] = self.fresh[idx[new] - n - 1]
        return out


class Retriever:
    def __init__(self, model, index: ItemIndex):
        self.model = model
        self.n_model = model.config.num_items  # items the model knows; later ones came through POST /items
        self.index = index
        self.vectors = ItemVectors(model)
        self.item_matrix = self.vectors.trained
        self.fresh_recommendable = np.zeros(0, dtype=bool)  # a new item with no known attribute has no vector to retrieve by

    def add_item(self, attribute_ids: list[int], text_vector: np.ndarray | None = None) -> bool:
        """A new item's vector (its known attributes, its text); whether it can be retrieved."""
        self.vectors.add(attribute_ids, text_vector)
        items = self.model.items
        recommendable = (bool(attribute_ids) and items.use_attributes) or (text_vector is not None and items.use_text)
        self.fresh_recommendable = np.append(self.fresh_recommendable, recommendable)
        return recommendable

    def encodable(self, histories: list[list[int]]) -> list[list[int]]:
        """Histories as the sequence model can read them: items it was not trained with are left out."""
        pad = self.model.config.pad_index
        return [[i for i in h if i <= self.n_model] or [pad] for h in histories]

    def user_vectors(self, histories: list[list[int]]) -> np.ndarray:
        return self.model.user_vectors(self.encodable(histories)).numpy()  # left_pad keeps the newest max_seq_len items

    def retrieve(self, u: np.ndarray, n: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, item indices) of the n best allowed items for one user vector."""
        fresh = self.vectors.fresh
        allowed = fit_mask(allowed, self.n_model + len(fresh))
        scores, ids = self.index.search(u[None], n, None if allowed is None else allowed[: self.n_model])
        keep = ids[0] > 0
        scores, ids = scores[0][keep], ids[0][keep]
        if len(fresh):
            ok = self.fresh_recommendable if allowed is None else self.fresh_recommendable & allowed[self.n_model :]
            extra = np.where(ok, fresh @ u, -np.inf)
            ok = np.isfinite(extra)
            scores = np.concatenate([scores, extra[ok].astype(np.float32)])
            ids = np.concatenate([ids, np.flatnonzero(ok) + self.n_model + 1])
            order = np.argsort(-scores, kind="stable")[:n]
            scores, ids = scores[order], ids[order]
        return scores, ids
