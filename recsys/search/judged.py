"""Search evaluated on judged queries: any catalog, TREC-style qrels, and the ranking modes of
recsys.search.engine, scored by ranx (nDCG@10/@100, Recall@100, MRR with graded gains).

    recsys search eval --config FILE --catalog items.parquet --qrels qrels.txt --queries queries.tsv

Protocol (printed and written with every result): every catalog item is ranked for every query;
unjudged items are non-relevant; the gain of a judged item is its grade minus `grade_offset`
(linear gain, ranx's `ndcg`, which takes whole-number gains; a grade at or below the offset is not
relevant); tied scores are put in a random order seeded by the query id (BM25 ties often, and the
catalog file's order must not decide); zero-shot: nothing is trained on the evaluated queries.
Queries that `/search` would refuse (recsys.search.engine.check_query) are skipped and counted.

Files:
- catalog: Parquet or CSV with an item id column and at least one text column (`TEXT_FIELDS`):
  title, category, brand and attribute values make the text as the served index makes it, and the
  other text columns a generic catalog has (name, product_title, description, genres) follow;
- qrels: TREC (`query_id 0 item_id grade`), three columns (`query_id item_id grade`), or a CSV /
  Parquet with columns query_id, item_id, grade (and optionally query, the query text);
- queries: TSV (`query_id<TAB>text`), CSV/Parquet with query_id and query, or JSON lines.
A qrels line with an unknown item, an unknown query, a non-numeric grade or a gain that is not a
whole number is skipped and counted, and its line (or row) number reported.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from recsys.search.encoder import item_text

ID_FIELDS = ("item_id", "id", "product_id", "product_uid", "doc_id", "docid", "asin", "movie_id", "sku")
TEXT_FIELDS = ("title", "name", "product_title", "description", "category", "brand", "attributes", "genres")
METRICS = ("ndcg@10", "ndcg@100", "recall@100", "mrr")
MODES = ("lexical", "dense", "hybrid")  # hybrid_personal needs users: judged query sets have none
DEPTH = 100  # the run holds each query's top 100 (the deepest metric)
SHOWN_PROBLEMS = 20


@dataclass
class Catalog:
    item_ids: list[str]
    texts: list[str]
    fields: list[str]  # the text columns the texts were made of


@dataclass
class JudgedQueries:
    queries: dict[str, str]  # query id → text
    qrels: dict[str, dict[str, int]]  # query id → item id → gain (grade − offset, > 0 only)
    skipped: Counter = field(default_factory=Counter)  # reason → count
    problems: list[str] = field(default_factory=list)  # the first lines skipped, with their numbers
    unevaluated: list[str] = field(default_factory=list)  # judged queries with no relevant item

    def summary(self) -> dict:
        return {"queries": len(self.queries), "judged_pairs": sum(len(self.qrels[q]) for q in self.queries),
                "skipped": dict(self.skipped), "problems": self.problems,
                "queries_without_relevant_item": len(self.unevaluated)}


def _read_table(path: Path):
    import pandas as pd

    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    if path.suffix.lower() in (".parquet", ".pq"):
        return pd.read_parquet(path)
    if path.suffix.lower() in (".jsonl", ".json"):
        return pd.read_json(path, lines=True, dtype=False)
    return pd.read_csv(path, sep=None, engine="python", dtype=str, keep_default_na=False)


def read_catalog(path: str | Path, id_field: str | None = None) -> Catalog:
    """Item ids and search texts (title, category, brand, attribute values and the other known text
    columns, joined as the served index joins them)."""
    table = _read_table(Path(path))
    columns = [c.lower() for c in table.columns]
    table.columns = columns
    id_col = id_field or next((c for c in ID_FIELDS if c in columns), None)
    if id_col is None or id_col not in columns:
        raise ValueError(f"{path}: no item id column; looked for {id_field or ', '.join(ID_FIELDS)} among {columns}. "
                         "Pass --id-field NAME")
    fields = [c for c in TEXT_FIELDS if c in columns]
    if not fields:
        raise ValueError(f"{path}: no text column to search; looked for {', '.join(TEXT_FIELDS)} among {columns}")

    def value(row, name):
        v = row.get(name)
        if isinstance(v, np.ndarray | tuple):  # a list column of a Parquet catalog
            v = list(v)
        return None if v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and v == "") else v

    ids, texts = [], []
    for row in table.to_dict("records"):
        attrs = value(row, "attributes")
        if isinstance(attrs, str):
            attrs = [a for a in attrs.replace("|", ",").split(",") if a.strip()]
        extra = [str(value(row, f)) for f in ("name", "product_title", "description", "genres") if value(row, f) is not None]
        title = value(row, "title")
        text = item_text(None if title is None else str(title), value(row, "category"), value(row, "brand"),
                         None if attrs is None else [str(a).strip() for a in attrs])
        texts.append(" ".join(p for p in [text, *[e.replace("|", " ") for e in extra]] if p))
        ids.append(str(row[id_col]))
    duplicated = [k for k, n in Counter(ids).items() if n > 1]
    if duplicated:
        raise ValueError(f"{path}: item ids must be unique; {len(duplicated)} repeat, e.g. {duplicated[:3]}")
    if not ids:
        raise ValueError(f"{path} holds no items")
    return Catalog(ids, texts, fields)


def read_queries(path: str | Path) -> dict[str, str]:
    path = Path(path)
    if path.suffix.lower() in (".tsv", ".txt", ".queries", "") and path.is_file():
        with path.open(newline="", encoding="utf-8") as fh:
            rows = [r for r in csv.reader(fh, delimiter="\t") if r]
        if rows and rows[0][0].lower() in ("query_id", "qid", "id"):
            rows = rows[1:]
        return {r[0].strip(): r[1].strip() for r in rows if len(r) >= 2 and r[1].strip()}
    table = _read_table(path)
    table.columns = [c.lower() for c in table.columns]
    qid = next((c for c in ("query_id", "qid", "id") if c in table.columns), None)
    text = next((c for c in ("query", "text", "query_text", "search_term") if c in table.columns), None)
    if qid is None or text is None:
        raise ValueError(f"{path}: queries need a query id column (query_id) and a text column (query); found {list(table.columns)}")
    return {str(a): str(b).strip() for a, b in zip(table[qid], table[text], strict=True) if str(b).strip()}


def _qrels_rows(path: Path):
    """(line number, query id, item id, grade text, query text or None) of a qrels file."""
    if path.suffix.lower() in (".csv", ".parquet", ".pq", ".jsonl", ".json"):
        table = _read_table(path)
        table.columns = [c.lower() for c in table.columns]
        need = {"query_id", "item_id", "grade"} - set(table.columns)
        if need and "relevance" in table.columns:
            table = table.rename(columns={"relevance": "grade"})
            need = {"query_id", "item_id", "grade"} - set(table.columns)
        if need:
            raise ValueError(f"{path}: qrels need the columns query_id, item_id, grade; missing {sorted(need)}")
        texts = table["query"] if "query" in table.columns else [None] * len(table)
        first = 2 if path.suffix.lower() == ".csv" else 1  # a CSV's line 1 is its header; JSON lines and Parquet rows count from 1
        for i, (q, d, g, t) in enumerate(zip(table["query_id"], table["item_id"], table["grade"], texts, strict=True)):
            yield i + first, str(q), str(d), str(g), t
        return
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            parts = line.split()
            if not parts or parts[0].startswith("#"):
                continue
            if len(parts) == 4:
                yield n, parts[0], parts[2], parts[3], None
            elif len(parts) == 3:
                yield n, parts[0], parts[1], parts[2], None
            else:
                yield n, None, None, line.strip(), None


def read_judged(qrels_path: str | Path, catalog: Catalog, queries_path: str | Path | None = None,
                grade_offset: float = 0.0, max_chars: int = 256, max_terms: int = 32) -> JudgedQueries:
    """Queries and their judgments, every bad qrels line counted and the first ones reported."""
    qrels_path = Path(qrels_path)
    if not qrels_path.is_file():
        raise FileNotFoundError(f"{qrels_path} does not exist (--qrels)")
    queries = read_queries(queries_path) if queries_path else {}
    known = set(catalog.item_ids)
    out = JudgedQueries(queries, {})

    def skip(reason: str, n: int, detail: str):
        out.skipped[reason] += 1
        if len(out.problems) < SHOWN_PROBLEMS:
            out.problems.append(f"{qrels_path.name} line {n}: {detail}")

    for n, qid, item, grade, text in _qrels_rows(qrels_path):
        if qid is None:
            skip("malformed_line", n, f"expected 'query_id 0 item_id grade' or 'query_id item_id grade', got {grade!r}")
            continue
        try:
            g = float(grade)
        except ValueError:
            skip("non_numeric_grade", n, f"grade {grade!r} is not a number")
            continue
        if not math.isfinite(g):
            skip("non_numeric_grade", n, f"grade {grade!r} is not a finite number")
            continue
        if item not in known:
            skip("unknown_item", n, f"item {item!r} is not in the catalog")
            continue
        if text is not None and str(text).strip():
            queries.setdefault(qid, str(text).strip())
        if qid not in queries:
            skip("unknown_query", n, f"query {qid!r} has no text (not in --queries)")
            continue
        gain = g - grade_offset
        if gain > 0 and not float(gain).is_integer():
            skip("non_integer_gain", n, f"gain {gain:g} (grade {grade} − offset {grade_offset:g}) is not a whole number; "
                 "ranx takes whole-number gains: map the grades to integers or choose --grade-offset")
            continue
        judged = out.qrels.setdefault(qid, {})
        if gain > 0:
            judged[item] = int(gain)
    # A query is evaluated when it has text /search accepts and at least one relevant item.
    from recsys.search.engine import check_query

    for q in [q for q in queries if out.qrels.get(q)]:
        try:
            check_query(queries[q], max_chars, max_terms)
        except ValueError as exc:
            out.skipped["refused_query"] += 1
            if len(out.problems) < SHOWN_PROBLEMS:
                out.problems.append(f"query {q}: {exc}")
            del out.qrels[q]
    out.queries = {q: t for q, t in queries.items() if out.qrels.get(q)}
    out.unevaluated = sorted(q for q in out.qrels if q not in out.queries)
    if not out.queries:
        raise ValueError(f"no query to evaluate: {qrels_path} and the queries file share no query with a relevant "
                         f"(grade > {grade_offset}) judged item; skipped lines: {dict(out.skipped) or 'none'}")
    return out


def protocol(grade_offset: float, modes, weights, encoder: str | None = None) -> dict:
    return {
        "encoder": encoder or "pretrained (the bundled all-MiniLM-L6-v2)",
        "ranking": "every catalog item, per query (lexical ranks the items that match a query term; the hybrids "
                   "rank the dense top-candidates united with the lexical top-candidates)",
        "unjudged": "non-relevant",
        "gain": f"grade - {grade_offset:g} (linear; ranx ndcg, Järvelin & Kekäläinen); grade <= {grade_offset:g} is not relevant",
        "ties": "a random order seeded by the query id",
        "training": "zero-shot: nothing is trained on the evaluated queries",
        "metrics": list(METRICS), "modes": list(modes), "depth": DEPTH,
        "search": {"fusion": weights.fusion, "lexical_norm": weights.lexical_norm, "dense_weight": weights.dense,
                   "lexical_weight": weights.lexical, "rrf_k": weights.rrf_k, "candidates": weights.candidates,
                   "lexical": asdict(weights.analyzer)},
    }


def top_items(index, catalog: Catalog, judged: JudgedQueries, mode: str, query_vectors: np.ndarray) -> dict[str, dict[str, float]]:
    """ranx run: per query, its top `DEPTH` items with rank-ordered scores (DEPTH, DEPTH − 1, …),
    so ranx sees exactly this order: by score, ties in a random order seeded by the query id."""
    run = {}
    for (qid, text), qv in zip(judged.queries.items(), query_vectors, strict=True):
        scores = index.score(text, mode, query_vector=qv)
        finite = np.flatnonzero(np.isfinite(scores) & (scores > (0 if mode == "lexical" else -np.inf)))
        seed = int.from_bytes(hashlib.sha256(qid.encode()).digest()[:8], "little")
        shuffle = np.random.default_rng(seed).random(len(finite))
        order = finite[np.lexsort((shuffle, -scores[finite]))[:DEPTH]]
        run[qid] = {catalog.item_ids[i]: float(DEPTH - r) for r, i in enumerate(order)}
        if not run[qid]:  # ranx needs a ranking per query: an empty answer scores 0 everywhere
            run[qid] = {"__none__": 0.0}
    return run


def evaluate(index, catalog: Catalog, judged: JudgedQueries, modes=MODES) -> dict:
    """{mode: {metric: mean, "per_query": {metric: {qid: value}}, "runs": {qid: [item ids]}}}."""
    from ranx import Qrels, Run
    from ranx import evaluate as ranx_evaluate

    qrels = Qrels({q: {d: float(g) for d, g in judged.qrels[q].items()} for q in judged.queries})
    vectors = index.encode_queries(list(judged.queries.values())) if any(m != "lexical" for m in modes) else \
        np.zeros((len(judged.queries), 1), np.float32)
    out = {}
    for mode in modes:
        run_dict = top_items(index, catalog, judged, mode, vectors)
        run = Run(run_dict)
        means = ranx_evaluate(qrels, run, list(METRICS), make_comparable=True)
        out[mode] = {
            **{m: float(means[m]) for m in METRICS},
            "per_query": {m: {q: float(v) for q, v in run.scores[m].items()} for m in METRICS},
            "runs": {q: [d for d in ranked if d != "__none__"][:10] for q, ranked in run_dict.items()},
        }
    return out


def per_query_rows(result: dict, judged: JudgedQueries) -> list[dict]:
    rows = []
    for mode, r in result.items():
        for q, text in judged.queries.items():
            rows.append({"mode": mode, "query_id": q, "query": text, **{m: r["per_query"][m].get(q, 0.0) for m in METRICS},
                         "relevant": len(judged.qrels[q]), "top10": " ".join(r["runs"].get(q, []))})
    return rows


def format_table(result: dict) -> str:
    lines = ["| mode | " + " | ".join(METRICS) + " |", "|---|" + "---|" * len(METRICS)]
    for mode, r in result.items():
        lines.append(f"| {mode} | " + " | ".join(f"{r[m]:.4f}" for m in METRICS) + " |")
    return "\n".join(lines)


def write_results(folder: str | Path, result: dict, judged: JudgedQueries, proto: dict, catalog: Catalog) -> dict[str, Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    summary = {"protocol": proto, "catalog": {"items": len(catalog.item_ids), "text_fields": catalog.fields},
               "judged": judged.summary(), "modes": {m: {k: r[k] for k in METRICS} for m, r in result.items()}}
    paths = {"summary": folder / "search_eval.json", "per_query": folder / "per_query.csv"}
    paths["summary"].write_text(json.dumps(summary, indent=2))
    rows = per_query_rows(result, judged)
    with paths["per_query"].open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return paths


# ---- `recsys search eval` ----------------------------------------------------------------------
def add_arguments(parser) -> None:
    parser.add_argument("--catalog", metavar="FILE", help="eval: items (Parquet/CSV) with an id column and text columns")
    parser.add_argument("--qrels", metavar="FILE", help="eval: judgments (TREC 'qid 0 item grade', or CSV query_id,item_id,grade)")
    parser.add_argument("--queries", metavar="FILE", help="eval: query texts (TSV qid<TAB>text, CSV or JSON lines); "
                        "not needed when the qrels carry a query column")
    parser.add_argument("--id-field", metavar="NAME", help=f"eval: the catalog's item id column (default: the first of {', '.join(ID_FIELDS)})")
    parser.add_argument("--grade-offset", type=float, default=0.0, metavar="G",
                        help="eval: gain = grade − G; grades ≤ G are not relevant (e.g. 1 for a 1–3 scale whose 1 means irrelevant)")
    parser.add_argument("--modes", default=",".join(MODES), metavar="M,M", help=f"eval: ranking modes (default {','.join(MODES)})")
    parser.add_argument("--encoder", metavar="DIR", help="eval: a text-encoder folder (default: the bundled pretrained MiniLM)")
    parser.add_argument("--out", metavar="DIR", help="eval: where search_eval.json and per_query.csv go "
                        "(default: <artifacts>/reports/search-eval/<catalog name>)")


def run_command(cfg, args) -> int:
    """`recsys search eval`: the config's search settings on a judged query set."""
    import sys

    from recsys.search.encoder import TextEncoder
    from recsys.search.engine import SearchIndex, SearchWeights

    missing = [f"--{n}" for n in ("catalog", "qrels") if not getattr(args, n)]
    if missing:
        print(f"error: recsys search eval needs {' and '.join(missing)}", file=sys.stderr)
        return 2
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        print(f"error: --modes: {unknown or 'none given'}; choose from {', '.join(MODES)}", file=sys.stderr)
        return 2
    catalog = read_catalog(args.catalog, args.id_field)
    judged = read_judged(args.qrels, catalog, args.queries, args.grade_offset,
                         cfg.search.max_query_chars, cfg.search.max_query_terms)
    weights = SearchWeights.of(cfg.search)
    dense = any(m != "lexical" for m in modes)
    encoder = TextEncoder(args.encoder) if dense else None  # lexical alone needs no language model
    vectors = encoder.encode(catalog.texts, max_tokens=cfg.search.max_tokens).numpy() if dense \
        else np.zeros((len(catalog.texts), 1), np.float32)
    index = SearchIndex(catalog.texts, vectors, encoder, weights, max_tokens=cfg.search.max_tokens)
    result = evaluate(index, catalog, judged, modes)
    proto = protocol(args.grade_offset, modes, weights, args.encoder)
    out = Path(args.out) if args.out else Path(cfg.artifacts.root) / "reports" / "search-eval" / Path(args.catalog).stem
    paths = write_results(out, result, judged, proto, catalog)
    print(f"catalog: {len(catalog.item_ids)} items, text from {', '.join(catalog.fields)}; "
          f"queries evaluated: {len(judged.queries)}")
    if judged.skipped:
        print(f"qrels lines skipped: {dict(judged.skipped)}")
        for line in judged.problems:
            print(f"  {line}")
    if judged.unevaluated:
        print(f"queries with no relevant judged item (not evaluated): {len(judged.unevaluated)}")
    print("protocol: " + "; ".join(f"{k}: {v}" for k, v in proto.items() if k not in ("search", "metrics", "modes", "depth")))
    print(format_table(result))
    print(json.dumps({k: str(v) for k, v in paths.items()}, indent=2))
    return 0
