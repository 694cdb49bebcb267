"""Keyword search over the catalog: lexical (BM25), dense (the text encoder), hybrid (both), and
hybrid personalised (plus the recommender's user · item score).

Every variant scores the same candidate set per query — the dense top-`candidates` by cosine
united with the lexical top-`candidates` by BM25 — so the variants differ only in how they order
it. Scores are put on one scale per query before they are mixed: BM25 divided by the query's best
BM25, cosine as is (both in [0, 1] for matching items), and the personal score as the candidates'
z-score squashed by a sigmoid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from recsys.search.encoder import TextEncoder, item_text
from recsys.search.lexical import BM25Index

VARIANTS = ("lexical", "dense", "hybrid", "hybrid_personal")


@dataclass(frozen=True)
class SearchWeights:
    dense: float = 0.6
    lexical: float = 0.4
    personal: float = 0.3
    candidates: int = 200


class SearchIndex:
    """Item texts, their BM25 index and their text embeddings (row i = item index i + 1)."""

    def __init__(self, items: list[dict], encoder: TextEncoder):
        self.items = sorted(items, key=lambda r: r["item_index"])
        self.texts = [item_text(r.get("title"), r.get("category"), r.get("brand"), r.get("attributes")) for r in self.items]
        self.encoder = encoder
        self.lexical = BM25Index(self.texts)
        self.vectors = encoder.encode(self.texts).numpy()

    def add_item(self, item: dict) -> int:
        """Cold start: an item added after training is searchable at once (its text embedded now)."""
        self.items.append(item)
        self.texts.append(item_text(item.get("title"), item.get("category"), item.get("brand"), item.get("attributes")))
        self.lexical = BM25Index(self.texts)
        self.vectors = np.vstack([self.vectors, self.encoder.encode(self.texts[-1:]).numpy()])
        return len(self.items)

    def score(self, query: str, variant: str, weights: SearchWeights, personal: np.ndarray | None = None,
              query_vector: np.ndarray | None = None) -> np.ndarray:
        """(N,) scores of every item for one query; -inf outside the candidate set (hybrid variants).
        `personal`: (N,) the recommender's u·v for this user (hybrid_personal only)."""
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        lex = self.lexical.scores(query)
        lex = lex / lex.max() if lex.max() > 0 else lex
        if variant == "lexical":
            return lex
        q = query_vector if query_vector is not None else self.encoder.encode([query]).numpy()[0]
        dense = self.vectors @ q
        if variant == "dense":
            return dense
        n = min(weights.candidates, len(dense))
        cands = np.union1d(np.argpartition(-dense, n - 1)[:n], np.argpartition(-lex, n - 1)[:n])
        out = np.full(len(dense), -np.inf, dtype=np.float32)
        mixed = weights.dense * dense[cands] + weights.lexical * lex[cands]
        if variant == "hybrid_personal":
            if personal is None:
                raise ValueError("hybrid_personal needs the user's recommender scores (personal)")
            p = personal[cands]
            z = (p - p.mean()) / (p.std() + 1e-6)
            mixed = mixed + weights.personal * (1 / (1 + np.exp(-z)))
        out[cands] = mixed
        return out


def rank_of(scores: np.ndarray, target: int) -> int:
    """0-based rank of item index `target`; a tie with m other items costs m/2 places (the expected
    rank under a random tie-break), so a scorer that gives many items the same score — BM25 on
    shared words — is not credited with first place."""
    mine = scores[target - 1]
    return int((scores > mine).sum() + ((scores == mine).sum() - 1) // 2)


def search_metrics(ranks: list[int]) -> dict:
    r = np.asarray(ranks)
    return {
        "ndcg@10": float(np.where(r < 10, 1 / np.log2(r + 2), 0).mean()),
        "recall@10": float((r < 10).mean()),
        "recall@100": float((r < 100).mean()),
        "mrr": float((1 / (r + 1)).mean()),
        "queries": len(r),
    }


def evaluate_search(index: SearchIndex, examples: list[dict], weights: SearchWeights, recommender=None) -> dict:
    """Quality of every variant on held-out (query, clicked item, user history) examples.
    `recommender`: a SeqRecModel for the personal score (skipped when None)."""
    queries = index.encoder.encode([e["query"] for e in examples]).numpy()
    personal = None
    if recommender is not None:
        histories = [e["history"] or [recommender.config.pad_index] for e in examples]
        users = torch.cat([recommender.user_vectors(histories[i : i + 256]) for i in range(0, len(histories), 256)])
        personal = (users @ recommender.item_vectors().T).numpy()
    out = {}
    for variant in VARIANTS:
        if variant == "hybrid_personal" and personal is None:
            continue
        ranks = [
            rank_of(index.score(e["query"], variant, weights, None if personal is None else personal[i], queries[i]), e["item"])
            for i, e in enumerate(examples)
        ]
        out[variant] = search_metrics(ranks)
    return out
