"""Lexical retrieval: BM25 over item text (bm25s, sparse matrices), scores for every item.

What real shoppers type is short, misspelled and full of units and model numbers ("1/2 in. pvc
elbow", "rustolem paint", "XR-500 filter"). The `Analyzer` turns a text into the terms BM25 indexes,
and the same analysis runs on queries, so each option changes both sides alike:
- `units`: a number and the unit after it become one term, with the unit's spellings folded
  ("12 oz", "12-ounce", "12oz" → `12oz`; `1/2 in.` → `1/2in`); fractions and decimals stay whole;
  hyphenated model codes are joined ("XR-500" → `xr500`);
- `stopwords`: bm25s's English stop-word list, less the negations (no, not), is dropped (not from
  a query made only of them);
- `stem`: the Snowball English stemmer (PyStemmer) on alphabetic terms ("elbows" → `elbow`);
- `typos`: a query term that is not in the catalog's vocabulary is replaced by the closest
  vocabulary term within 1 edit (2 for terms of 8+ letters; RapidFuzz Levenshtein), when there
  is one (optimal string alignment: a swap of two neighbouring letters is one edit; among equally
  close terms the most frequent wins). A term the catalog has is never touched.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

_TOKEN = re.compile(r"[a-z0-9]+")
# Numbers (integer, decimal, fraction), words with inner hyphens (model codes), inch and foot marks.
_RICH = re.compile(r"\d+(?:[./]\d+)+|[a-z0-9]+(?:-[a-z0-9]+)*|[\"']")
_NUMBER = re.compile(r"\d+(?:[./]\d+)*")
_NUMBER_UNIT = re.compile(r"(\d+(?:[./]\d+)*)([a-z]+)")
UNITS = {
    "in": "in", "inch": "in", "inches": "in", '"': "in",
    "ft": "ft", "foot": "ft", "feet": "ft", "'": "ft",
    "oz": "oz", "ounce": "oz", "ounces": "oz", "floz": "oz",
    "lb": "lb", "lbs": "lb", "pound": "lb", "pounds": "lb",
    "g": "g", "gram": "g", "grams": "g", "kg": "kg", "mg": "mg",
    "ml": "ml", "l": "l", "litre": "l", "liter": "l", "litres": "l", "liters": "l",
    "gal": "gal", "gallon": "gal", "gallons": "gal", "qt": "qt", "quart": "qt",
    "mm": "mm", "cm": "cm", "m": "m", "yd": "yd", "yard": "yd", "yards": "yd",
    "v": "v", "volt": "v", "volts": "v", "w": "w", "watt": "w", "watts": "w", "amp": "a", "amps": "a",
    "pk": "pk", "pack": "pk", "pc": "pc", "pcs": "pc", "piece": "pc", "pieces": "pc",
    "ct": "ct", "count": "ct",
}


def tokenize(text: str) -> list[str]:
    """The plain words (letters and digits) of a text: what query checks count."""
    return _TOKEN.findall(text.lower())


@lru_cache(maxsize=1)
def _stemmer():
    try:
        import Stemmer
    except ImportError as exc:
        raise ImportError("search.lexical.stem needs PyStemmer (pip install PyStemmer)") from exc
    return Stemmer.Stemmer("english")


@lru_cache(maxsize=1)
def _stopwords() -> frozenset[str]:
    from bm25s.stopwords import STOPWORDS_EN

    return frozenset(STOPWORDS_EN) - {"no", "not"}  # "not scented" must not match "scented"


@dataclass(frozen=True)
class Analyzer:
    """How a text becomes BM25 terms (the `search.lexical` settings)."""

    stem: bool = False
    stopwords: bool = False
    units: bool = False
    typos: bool = False

    @classmethod
    def of(cls, cfg) -> Analyzer:
        return cls(cfg.stem, cfg.stopwords, cfg.units, cfg.typos)

    def terms(self, text: str) -> list[str]:
        text = text.lower()
        out = self._unit_terms(text) if self.units else _TOKEN.findall(text)
        if self.stopwords:
            kept = [t for t in out if t not in _stopwords()]
            out = kept or out
        if self.stem:
            alpha = [i for i, t in enumerate(out) if t.isalpha()]
            for i, s in zip(alpha, _stemmer().stemWords([out[i] for i in alpha]), strict=True):
                out[i] = s
        return out


    @staticmethod
    def _unit_terms(text: str) -> list[str]:
        """Terms with a number and its unit joined and the unit folded; model codes joined."""
        raw = _RICH.findall(text)
        out: list[str] = []
        i = 0
        while i < len(raw):
            tok = raw[i]
            parts = tok.split("-")
            if len(parts) == 2 and _NUMBER.fullmatch(parts[0]) and parts[1] in UNITS:  # 12-ounce
                out.append(parts[0] + UNITS[parts[1]])
            elif _NUMBER.fullmatch(tok):
                nxt = raw[i + 1] if i + 1 < len(raw) else ""
                if nxt in UNITS:  # 12 oz, 1/2 in, 6"
                    out.append(tok + UNITS[nxt])
                    i += 1
                else:
                    out.append(tok)
            elif (m := _NUMBER_UNIT.fullmatch(tok)) and m[2] in UNITS:  # 12oz, 3inch
                out.append(m[1] + UNITS[m[2]])
            elif tok not in ('"', "'"):
                out.append(tok.replace("-", ""))
            i += 1
        return out


class BM25Index:
    """BM25 (Lucene variant, k1 1.5, b 0.75) over N item texts; row i is item index i + 1."""

    def __init__(self, texts: list[str], k1: float = 1.5, b: float = 0.75, analyzer: Analyzer | None = None):
        import bm25s

        self.analyzer = analyzer or Analyzer()
        self.num_items, self.k1 = len(texts), k1
        corpus = [self.analyzer.terms(t) for t in texts]
        self.df = Counter(t for doc in corpus for t in set(doc))
        self.vocab = sorted(self.df)
        self.retriever = bm25s.BM25(k1=k1, b=b, method="lucene")
        self.retriever.index(corpus, show_progress=False)
        self._corrections: dict[str, str | None] = {}

    def correct(self, term: str) -> str | None:
        """The vocabulary term a misspelled query term stands for (None: no close one)."""
        if term in self._corrections:
            return self._corrections[term]
        from rapidfuzz import process
        from rapidfuzz.distance import OSA

        edits = 1 if len(term) < 8 else 2
        found = process.extract(term, self.vocab, scorer=OSA.distance, score_cutoff=edits, limit=None)
        fixed = min(found, key=lambda f: (f[1], -self.df[f[0]], f[0]))[0] if found else None
        if len(self._corrections) < 100_000:
            self._corrections[term] = fixed
        return fixed

    def query_terms(self, query: str) -> list[str]:
        """The query's terms as the index knows them (typos corrected when enabled)."""
        terms = self.analyzer.terms(query)
        if not self.analyzer.typos:
            return terms
        out = []
        for t in terms:
            if t in self.df or not t.isalpha() or len(t) < 4:
                out.append(t)
            else:
                fixed = self.correct(t)
                out.append(fixed if fixed is not None else t)
        return out

    def scores(self, query: str) -> np.ndarray:
        """(N,) BM25 score of every item (0 where no query term occurs)."""
        terms = self.query_terms(query)
        if not terms:
            return np.zeros(self.num_items, dtype=np.float32)
        return np.asarray(self.retriever.get_scores(terms), dtype=np.float32)

    def bound(self, query: str) -> float:
        """The BM25 score no item can reach for this query: Σ over its known terms of idf, a
        term's score as its frequency grows without limit (bm25s's Lucene variant scores
        idf · tf / (tf + k1 · (1 − b + b · dl / avgdl))). It depends on the catalog's document
        frequencies, not on which items this query's retrieval found."""
        n = self.num_items
        return float(sum(
            math.log(1 + (n - self.df[t] + 0.5) / (self.df[t] + 0.5)) for t in self.query_terms(query) if t in self.df
        ))

    def matched_terms(self, query: str, text: str) -> list[str]:
        """The parts of the query whose terms an item's text contains (what the response shows as
        the lexical match): its words, or a number with its unit ("12 oz") when `units` makes them
        one term."""
        have = set(self.analyzer.terms(text))
        words = [w.strip(".,;:!?()[]'") for w in query.lower().split()]
        words = [w for w in words if w]
        spans, i = [], 0
        while i < len(words):
            pair = f"{words[i]} {words[i + 1]}" if i + 1 < len(words) else None
            if self.analyzer.units and pair and len(self.analyzer.terms(pair)) == 1 and len(self.analyzer.terms(words[i])) == 1 \
                    and self.analyzer.terms(pair) != self.analyzer.terms(words[i]):
                spans.append(pair)  # "12 oz" → 12oz
                i += 2
            else:
                spans.append(words[i])
                i += 1
        return [s for s in dict.fromkeys(spans) if any(t in have for t in self.query_terms(s))]
