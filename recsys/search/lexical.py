"""Lexical retrieval: BM25 over item text (bm25s, sparse matrices), scores for every item."""

from __future__ import annotations

import re

import numpy as np

_TOKEN = re.compile(r"[a-z0-9]+")


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


class BM25Index:
    """BM25 (Lucene variant, k1 1.5, b 0.75) over N item texts; row i is item index i + 1."""

    def __init__(self, texts: list[str], k1: float = 1.5, b: float = 0.75):
        import bm25s

        self.num_items = len(texts)
        self.retriever = bm25s.BM25(k1=k1, b=b, method="lucene")
        self.retriever.index([tokenize(t) for t in texts], show_progress=False)

    def scores(self, query: str) -> np.ndarray:
        """(N,) BM25 score of every item (0 where no query term occurs)."""
        terms = tokenize(query)
        if not terms:
            return np.zeros(self.num_items, dtype=np.float32)
        return np.asarray(self.retriever.get_scores(terms), dtype=np.float32)

    def matched_terms(self, query: str, text: str) -> list[str]:
        """The query terms an item's text contains (what the response shows as the lexical match)."""
        words = set(tokenize(text))
        return [t for t in dict.fromkeys(tokenize(query)) if t in words]
