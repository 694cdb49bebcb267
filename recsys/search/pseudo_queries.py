"""Queries made from the catalog itself, for a catalog whose logs hold no searches.

Two generators, deliberately different, so that what adapts the encoder is not what measures it:
- `training_queries` (domain adaptation, recsys.search.adapt): contiguous title fragments,
  attribute phrases (a category, brand or attribute value with a title word), and the same with
  a typo or with a unit written another way ("12oz" → "12 ounce");
- `shopper_queries` (evaluation when no judged queries exist, benchmarks/search.py): 1–3 of the
  title's content words in any order, a plural flipped, a typo — shorter and less ordered, like
  the queries of a real shop's search box. The item it was made from is relevant (grade 1), and so
  is every item with the same title (they cannot be told apart by text).
Both are seeded; neither sees any logged query.
"""

from __future__ import annotations

import re

import numpy as np

RECIPE = 2  # the generators' and the hold-out's recipe, in the adaptation's run key: a change is a new run
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'&/.-]*")
_UNIT = re.compile(r"(\d+(?:[./]\d+)?)\s*-?\s*(oz|ounce|ounces|in|inch|inches|cm|mm|ml|l|g|kg|lb|lbs|ft|pack|pk|pc|pcs)\b", re.I)
_SPELLINGS = {"oz": ["oz", " oz", " ounce"], "in": ["in", " in", " inch", '"'], "cm": ["cm", " cm"], "mm": ["mm", " mm"],
              "ml": ["ml", " ml"], "l": ["l", " l", " litre"], "g": ["g", " g", " gram"], "kg": ["kg", " kg"],
              "lb": ["lb", " lb", " pound"], "ft": ["ft", " ft", " feet"], "pk": [" pack", "pk", " pk"], "pc": [" pcs", "pc", " piece"]}
_CANON = {"ounce": "oz", "ounces": "oz", "inch": "in", "inches": "in", "lbs": "lb", "pack": "pk", "pcs": "pc"}
_STOP = frozenset("a an and are as at be by for from in into is it of on or set the to with".split())
_KEYBOARD = "qwertyuiopasdfghjklzxcvbnm"


def _words(title: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(title or "")]


def title_key(row: dict) -> str:
    """A row's title as the generators see it (same key: indistinguishable by title)."""
    return " ".join(_words(row.get("title")))


def typo(word: str, rng: np.random.Generator) -> str:
    """One edit of a word of 5+ letters: swap two neighbours, drop, double or replace a letter."""
    if len(word) < 5 or not word.isalpha():
        return word
    i = int(rng.integers(1, len(word) - 1))
    kind = int(rng.integers(4))
    if kind == 0:
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if kind == 1:
        return word[:i] + word[i + 1:]
    if kind == 2:
        return word[:i] + word[i] + word[i:]
    return word[:i] + _KEYBOARD[int(rng.integers(len(_KEYBOARD)))] + word[i + 1:]


def respell_units(text: str, rng: np.random.Generator) -> str:
    """Every number with a unit written with another of the unit's spellings."""
    def sub(m):
        unit = _CANON.get(m[2].lower(), m[2].lower())
        options = _SPELLINGS.get(unit, [unit])
        return m[1] + options[int(rng.integers(len(options)))]
    return _UNIT.sub(sub, text)


def _fragment(words: list[str], rng: np.random.Generator) -> list[str]:
    if len(words) <= 2:
        return list(words)
    size = int(rng.integers(2, min(4, len(words)) + 1))
    start = int(rng.integers(0, len(words) - size + 1))
    return words[start : start + size]


def _phrases(row: dict) -> list[str]:
    out = [row.get("category"), row.get("brand")]
    out += [a.split(":", 1)[-1] for a in (list(row.get("attributes")) if row.get("attributes") is not None else [])]
    return [p.replace("_", " ").lower() for p in out if p]


def training_queries(rows: list[dict], per_item: int, seed: int) -> list[dict]:
    """(query, item index) pairs, `per_item` per catalog row with a title: the adaptation's data."""
    rng = np.random.default_rng([seed, 1])
    out = []
    for row in rows:
        words = _words(row.get("title"))
        if not words:
            continue
        phrases = _phrases(row)
        for _ in range(per_item):
            kind = int(rng.integers(4))
            if kind == 1 and phrases:
                content = [w for w in words if w not in _STOP] or words
                q = [phrases[int(rng.integers(len(phrases)))], content[int(rng.integers(len(content)))]]
            else:
                q = _fragment(words, rng)
            text = " ".join(q)
            if kind == 2:
                j = int(rng.integers(len(q)))
                text = " ".join(typo(w, rng) if i == j else w for i, w in enumerate(q))
            elif kind == 3:
                text = respell_units(row.get("title", "").lower(), rng) if _UNIT.search(row.get("title") or "") else text
            out.append({"query": text, "item": int(row["item_index"])})
    return out


def _flip_plural(word: str) -> str:
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word + "s" if word.isalpha() else word


def shopper_queries(rows: list[dict], n: int, seed: int, id_field: str = "item_id") -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """(query id → text, query id → {item id: 1}): `n` evaluation queries from random catalog rows."""
    rng = np.random.default_rng([seed, 2])
    by_title: dict[str, list[str]] = {}
    for row in rows:
        by_title.setdefault(title_key(row), []).append(str(row[id_field]))
    candidates = [r for r in rows if len([w for w in _words(r.get("title")) if w not in _STOP and len(w) > 2])]
    picks = rng.choice(len(candidates), size=min(n, len(candidates)), replace=False)
    queries, qrels = {}, {}
    for k, p in enumerate(picks):
        row = candidates[int(p)]
        content = [w for w in _words(row.get("title")) if w not in _STOP and len(w) > 2]
        size = int(rng.integers(1, min(3, len(content)) + 1))
        q = [content[int(i)] for i in rng.choice(len(content), size=size, replace=False)]
        if rng.random() < 0.3:
            j = int(rng.integers(len(q)))
            q[j] = _flip_plural(q[j])
        if rng.random() < 0.2:
            j = int(rng.integers(len(q)))
            q[j] = typo(q[j], rng)
        qid = f"pq{k:05d}"
        queries[qid] = " ".join(q)
        qrels[qid] = {i: 1 for i in by_title[title_key(row)]}
    return queries, qrels
