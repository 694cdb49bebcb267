"""Keyword search over the catalog: lexical (BM25), dense (the text encoder), hybrid (both), and
hybrid personalised (plus the recommender's user · item score). Offline evaluation and the
`/search` endpoint run this same code.

Every variant scores the same candidate set per query — the dense top-`candidates` (from the
versioned ANN index over the item text vectors) united with the lexical top-`candidates` by
BM25 — so the variants differ only in how they order it. Filters are applied before either
retrieval (a bitmap inside FAISS, a mask on BM25). Two fusions (`search.fusion`):
- `weighted`: the signals on one scale, then a weighted sum. BM25 is divided by the query's best
  allowed BM25 (`lexical_norm: best`) or by the score no item can reach for the query's terms
  (`bound`, recsys.search.lexical: it does not depend on what this query retrieved); cosine as is;
  the personal score as the candidates' z-score squashed by a sigmoid.
- `rrf`: reciprocal-rank fusion, Σ weight / (rrf_k + rank) over the signals' ranks among the
  candidates (tied scores share their mean rank; an item without a lexical match gets no lexical
  term). Ranks need no scale, so nothing is tuned per catalog.

Cold start: `add` embeds a new item's text at once; items added after the index was built are
scored exactly beside the ANN search, so they are found from the moment they are added.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from recsys.eval.metrics import mean_graded_metrics
from recsys.index.ann import ItemIndex
from recsys.search.encoder import TextEncoder, row_text
from recsys.search.lexical import Analyzer, BM25Index, tokenize

VARIANTS = ("lexical", "dense", "hybrid", "hybrid_personal")
FUSIONS = ("weighted", "rrf")
LEXICAL_NORMS = ("best", "bound")
MAX_WORD_CHARS = 64
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


@dataclass(frozen=True)
class SearchWeights:
    dense: float = 0.6
    lexical: float = 0.4
    personal: float = 0.3
    candidates: int = 200
    fusion: str = "weighted"
    lexical_norm: str = "best"
    rrf_k: int = 60
    analyzer: Analyzer = Analyzer()

    def __post_init__(self):
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {self.fusion!r}")
        if self.lexical_norm not in LEXICAL_NORMS:
            raise ValueError(f"lexical_norm must be one of {LEXICAL_NORMS}, got {self.lexical_norm!r}")

    @classmethod
    def of(cls, cfg) -> SearchWeights:
        """From the typed `search` config section."""
        return cls(cfg.dense_weight, cfg.lexical_weight, cfg.personal_weight, cfg.candidates,
                   cfg.fusion, cfg.lexical_norm, cfg.rrf_k, Analyzer.of(cfg.lexical))


@dataclass
class Hit:
    """One ranked item and the signals behind its score."""

    item: int
    score: float
    lexical: float  # normalised BM25 (SearchWeights.lexical_norm)
    semantic: float  # cosine of query and item text
    personal: float | None  # the user's squashed affinity (hybrid_personal only)


def fit_mask(allowed: np.ndarray | None, n: int) -> np.ndarray | None:
    """A filter mask made before items were added covers them as not allowed."""
    if allowed is None or len(allowed) >= n:
        return allowed
    return np.concatenate([allowed, np.zeros(n - len(allowed), dtype=bool)])


def check_query(query: str, max_chars: int, max_terms: int) -> str:
    """The query, stripped, or ValueError saying what is wrong with it and what is accepted."""
    q = query.strip()
    if not q:
        raise ValueError("query is empty; send the words to search for")
    if len(q) > max_chars:
        raise ValueError(f"query is {len(q)} characters; at most {max_chars} (search.max_query_chars)")
    if _CONTROL.search(q):
        raise ValueError("query contains control characters; send plain text")
    terms = tokenize(q)
    if not terms:
        raise ValueError(f"query {q!r} has no words (letters or digits) to search for")
    if len(terms) > max_terms:
        raise ValueError(f"query has {len(terms)} words; at most {max_terms} (search.max_query_terms)")
    longest = max(terms, key=len)
    if len(longest) > MAX_WORD_CHARS:
        raise ValueError(f"query word {longest[:20]!r}… is {len(longest)} characters; words are at most {MAX_WORD_CHARS}")
    return q


def _ranks(scores: np.ndarray) -> np.ndarray:
    """1-based rank of each score, best first; tied scores share their mean rank."""
    from scipy.stats import rankdata

    return rankdata(-np.asarray(scores, dtype=np.float64), method="average")


class SearchIndex:
    """Item texts, their BM25 index and their text vectors (row i = item index i + 1), with a dense
    ANN index over the first `indexed` rows."""

    def __init__(self, texts: list[str], vectors: np.ndarray, encoder: TextEncoder, weights: SearchWeights,
                 dense_index: ItemIndex | None = None, max_tokens: int = 48, cache_size: int = 0, query_encoder=None):
        """`query_encoder`: what encodes queries when not `encoder` (an OnnxQueryEncoder); new items'
        texts always go through `encoder`, as the index's vectors did."""
        from recsys.config import IndexConfig

        self.texts = list(texts)
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.encoder, self.weights, self.max_tokens = encoder, weights, max_tokens
        self.query_encoder = query_encoder
        self.dense_index = dense_index or ItemIndex.build(self.vectors, IndexConfig(kind="flat"))
        self.indexed = self.dense_index.num_items
        if self.indexed != len(self.texts):
            raise ValueError(f"the text index holds {self.indexed} items, the catalog {len(self.texts)}: they must agree")
        self.lexical = BM25Index(self.texts, analyzer=weights.analyzer)
        self.cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self.cache_size = cache_size

    @classmethod
    def from_items(cls, items: list[dict], encoder: TextEncoder, weights: SearchWeights, max_tokens: int = 48) -> SearchIndex:
        """Embed every item's text now (offline evaluation and tests); rows sorted by item index."""
        texts = [row_text(r) for r in sorted(items, key=lambda r: r["item_index"])]
        return cls(texts, encoder.encode(texts, max_tokens=max_tokens).numpy(), encoder, weights, max_tokens=max_tokens)

    @property
    def num_items(self) -> int:
        return len(self.texts)

    def add(self, text: str) -> int:
        """Cold start: a new item's text is embedded and searchable at once; returns its item index."""
        vector = self.encoder.encode([text], max_tokens=self.max_tokens).numpy()
        self.texts.append(text)
        self.vectors = np.vstack([self.vectors, vector])
        self.lexical = BM25Index(self.texts, analyzer=self.weights.analyzer)  # BM25's document frequencies cover the new item too
        return len(self.texts)

    def add_item(self, item: dict) -> int:
        return self.add(row_text(item))

    def encode_queries(self, queries: list[str]) -> np.ndarray:
        """(B, D) query vectors in one encoder pass for the ones not in the LRU cache."""
        missing = list(dict.fromkeys(q for q in queries if q not in self.cache))
        fresh = dict(zip(missing, self._encode_queries(missing), strict=True)) if missing else {}
        out = []
        for q in queries:
            v = fresh.get(q)
            if v is None:
                v = self.cache[q]
                self.cache.move_to_end(q)
            elif self.cache_size:
                self.cache[q] = v
                if len(self.cache) > self.cache_size:
                    self.cache.popitem(last=False)
            out.append(v)
        return np.stack(out) if out else np.zeros((0, self.vectors.shape[1]), np.float32)

    def _encode_queries(self, queries: list[str]) -> np.ndarray:
        if self.query_encoder is not None:
            return self.query_encoder.encode(queries, max_tokens=self.max_tokens)
        return self.encoder.encode(queries, max_tokens=self.max_tokens).numpy()

    # ---- one query -----------------------------------------------------------------------
    def lexical_scores(self, query: str, allowed: np.ndarray | None = None) -> np.ndarray:
        """(N,) BM25 over the best allowed BM25 or over the query's bound (0 for items not allowed)."""
        lex = self.lexical.scores(query)
        if allowed is not None:
            lex = np.where(allowed, lex, 0.0).astype(np.float32)
        if self.weights.lexical_norm == "bound":
            scale = self.lexical.bound(query)
        else:
            scale = lex.max() if len(lex) else 0.0
        return (lex / scale).astype(np.float32) if scale > 0 else lex

    def dense_top(self, query_vectors: np.ndarray, allowed: np.ndarray | None = None) -> list[np.ndarray]:
        """Per query, the item indices of the dense top-n: one ANN search for the batch over the
        indexed items, exact scores over items added since."""
        n = self.weights.candidates
        _, ids = self.dense_index.search(query_vectors, n, None if allowed is None else allowed[: self.indexed])
        out = [row[row > 0] for row in ids]
        if self.num_items > self.indexed:  # cold-start items, scored exactly
            extra = query_vectors @ self.vectors[self.indexed :].T
            if allowed is not None:
                extra = np.where(allowed[self.indexed :], extra, -np.inf)
            for b, row in enumerate(extra):
                top = np.argsort(-row, kind="stable")[:n]
                out[b] = np.concatenate([out[b], top[np.isfinite(row[top])] + self.indexed + 1])
        return out

    def candidates(self, query_vector: np.ndarray, lex: np.ndarray, allowed: np.ndarray | None = None,
                   dense_ids: np.ndarray | None = None) -> np.ndarray:
        """Item indices: the dense top-n (`dense_top`, unless given) united with the lexical top-n
        (items sharing a word with the query)."""
        if dense_ids is None:
            dense_ids = self.dense_top(query_vector[None], allowed)[0]
        m = min(self.weights.candidates, len(lex))
        lex_top = np.argpartition(-lex, m - 1)[:m]
        return np.union1d(dense_ids, lex_top[lex[lex_top] > 0] + 1).astype(np.int64)

    def mix(self, variant: str, semantic: np.ndarray, lexical: np.ndarray, personal: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        """(scores, squashed personal affinity) of candidates from their signals."""
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if variant == "lexical":
            return lexical, None
        if variant == "dense":
            return semantic, None
        w = self.weights
        if w.fusion == "rrf":
            mixed = w.dense / (w.rrf_k + _ranks(semantic)) + np.where(lexical > 0, w.lexical / (w.rrf_k + _ranks(lexical)), 0.0)
        else:
            mixed = w.dense * semantic + w.lexical * lexical
        if variant != "hybrid_personal":
            return mixed, None
        if personal is None:
            raise ValueError("hybrid_personal needs the user's recommender scores (personal)")
        z = (personal - personal.mean()) / (personal.std() + 1e-6)
        affinity = 1 / (1 + np.exp(-z))
        if w.fusion == "rrf":
            return mixed + w.personal / (w.rrf_k + _ranks(personal)), affinity
        return mixed + w.personal * affinity, affinity

    def rank(self, query: str, query_vector: np.ndarray, k: int, variant: str,
             personal: Callable[[np.ndarray], np.ndarray] | None = None, allowed: np.ndarray | None = None,
             dense_ids: np.ndarray | None = None) -> list[Hit]:
        """The k best allowed items for one query, best first. `personal(item indices)` → the
        recommender's u·v of those items (hybrid_personal only); `dense_ids`: this query's
        `dense_top`, when a batch searched them together."""
        allowed = fit_mask(allowed, self.num_items)
        lex = self.lexical_scores(query, allowed)
        cands = self.candidates(query_vector, lex, allowed, dense_ids)
        if not len(cands):
            return []
        semantic = self.vectors[cands - 1] @ query_vector
        p = personal(cands) if variant == "hybrid_personal" and personal is not None else None
        scores, affinity = self.mix(variant, semantic, lex[cands - 1], p)
        order = np.argsort(-scores, kind="stable")[:k]
        return [
            Hit(int(cands[i]), float(scores[i]), float(lex[cands[i] - 1]), float(semantic[i]), None if affinity is None else float(affinity[i]))
            for i in order
        ]

    def score(self, query: str, variant: str, personal: np.ndarray | None = None, query_vector: np.ndarray | None = None) -> np.ndarray:
        """(N,) scores of every item for one query (offline evaluation): lexical and dense score
        every item; the hybrids score the candidate set and give the rest -inf.
        `personal`: (N,) the recommender's u·v for this user (hybrid_personal only)."""
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        lex = self.lexical_scores(query)
        if variant == "lexical":
            return lex
        q = query_vector if query_vector is not None else self.encode_queries([query])[0]
        if variant == "dense":
            return self.vectors @ q
        cands = self.candidates(q, lex)
        out = np.full(self.num_items, -np.inf, dtype=np.float32)
        if len(cands):
            out[cands - 1] = self.mix(variant, self.vectors[cands - 1] @ q, lex[cands - 1], None if personal is None else personal[cands - 1])[0]
        return out


def evaluate_search(index: SearchIndex, examples: list[dict], recommender=None, variants=VARIANTS) -> dict:
    """nDCG@10, Recall@10/@100 and MRR (recsys/eval/metrics.py: graded relevance, ties broken at
    random in expectation, so BM25's many equal scores earn no first place) of each variant on
    held-out (query, clicked item, user history) examples; the clicked item has grade 1.
    `recommender`: a SeqRecModel for the personal score (hybrid_personal skipped when None)."""
    queries = index.encode_queries([e["query"] for e in examples])
    personal = None
    if recommender is not None:
        histories = [e["history"] or [recommender.config.pad_index] for e in examples]
        users = torch.cat([recommender.user_vectors(histories[i : i + 256]) for i in range(0, len(histories), 256)])
        personal = (users @ recommender.item_vectors().T).numpy()
    out = {}
    for variant in variants:
        if variant == "hybrid_personal" and personal is None:
            continue
        runs = (  # (N,) scores, column i = item index i + 1
            (index.score(e["query"], variant, None if personal is None else personal[i], queries[i]), {e["item"] - 1: 1.0})
            for i, e in enumerate(examples)
        )
        m = mean_graded_metrics(runs, (10, 100))
        out[variant] = {key: m[key] for key in ("ndcg@10", "recall@10", "recall@100", "mrr", "queries")}
    return out
