"""Ranking: the CTR model's click log-odds of each history's candidates (one encoder pass per
history), on the ranker's own item vectors (new items included)."""

from __future__ import annotations

import numpy as np
import torch

from recsys.online.retrieve import ItemVectors, Retriever


class CTRRanker:
    def __init__(self, ranker, retriever: Retriever):
        self.model = ranker
        self.retriever = retriever  # for the histories' encodable form
        self.vectors = ItemVectors(ranker.seqrec)

    def add_item(self, attribute_ids: list[int], text_vector: np.ndarray | None = None) -> None:
        self.vectors.add(attribute_ids, text_vector)

    def logits(self, histories: list[list[int]], candidates: list[list[int]], contexts: list[tuple]) -> list[np.ndarray]:
        width = max(len(c) for c in candidates)
        padded = np.asarray([c + [c[0]] * (width - len(c)) for c in candidates], dtype=np.int64)  # (B, C)
        v = torch.from_numpy(self.vectors.of(padded.reshape(-1)).reshape(*padded.shape, -1))  # (B, C, H)
        logits = self.model.rank_vectors(self.retriever.encodable(histories), v, torch.tensor(contexts, dtype=torch.long)).numpy()
        return [row[: len(c)] for row, c in zip(logits, candidates, strict=True)]

    def probabilities(self, histories, candidates, contexts) -> list[np.ndarray]:
        return [1 / (1 + np.exp(-lg)) for lg in self.logits(histories, candidates, contexts)]
