"""Search on catalogs with real text: what stemming, typo tolerance, the fusion and the catalog-
adapted encoder each buy, every mode scored by `recsys search eval`'s code (recsys.search.judged,
ranx).

    python -m benchmarks.search_text [--catalogs online_retail,movielens,synthetic] [--queries 500]

Catalogs and their queries:
- online_retail, movielens: the products' and films' real titles (configs/online-retail.yaml,
  configs/movielens.yaml). No judged queries exist for them, so the queries are `shopper_queries`
  (recsys.search.pseudo_queries): 1–3 title words in any order, plurals flipped, typos, made with a
  seed the adaptation never uses, by a generator it never trains on, and only from the titles the
  adaptation held out (`search.adapt.holdout` set to 0.2 here, so 20% of the titles; every item
  sharing a held-out title is held out with it). The adapted encoder is the search stage's
  `search.adapt` run on the same catalog (its own pseudo-queries of the other 80% of titles).
- synthetic: the search benchmark's shop (benchmarks/configs/search-shop.yaml), its logged test
  searches; "adapted" there is the encoder fine-tuned on the logged training searches.

Grid: lexical × {plain, stem (+ stop words, units), stem_typos}; dense × {pretrained, adapted};
hybrid × lexical × {weighted_best, weighted_bound, rrf} × encoder. Per configuration: nDCG@10,
nDCG@100, Recall@100, MRR and the in-process query time (ms, one thread, query encoding included).
Also, on the synthetic shop (the only catalog with searchers' histories), the personal weight.

Writes `real_text` (and `personal_weight`) into benchmarks/results/search.json, keys
`real_text.<catalog>.<config>.ndcg@10`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
CONFIGS = {"online_retail": "configs/online-retail.yaml", "movielens": "configs/movielens.yaml",
           "synthetic": "benchmarks/configs/search-shop.yaml"}
LEXICAL = {"plain": {}, "stem": {"stem": True, "stopwords": True, "units": True},
           "stem_typos": {"stem": True, "stopwords": True, "units": True, "typos": True}}
FUSIONS = {"weighted_best": {"fusion": "weighted", "lexical_norm": "best"},
           "weighted_bound": {"fusion": "weighted", "lexical_norm": "bound"}, "rrf": {"fusion": "rrf"}}
QUERY_SEED = 20261202  # the evaluation queries' seed: not the adaptation's (search.train.seed)


def judged_set(name: str, cfg, dataset, n: int):
    """(Catalog, JudgedQueries) for one catalog."""
    import pyarrow.parquet as pq

    from recsys.search.encoder import row_text
    from recsys.search.judged import Catalog, JudgedQueries
    from recsys.search.pseudo_queries import shopper_queries

    rows = pq.read_table(dataset.path / "items.parquet", columns=["item_index", "item_id", "title", "category", "brand", "attributes"]
                         ).sort_by("item_index").to_pylist()
    catalog = Catalog([str(r["item_index"]) for r in rows], [row_text(r) for r in rows], ["title", "category", "brand", "attributes"])
    if name == "synthetic":
        from benchmarks.search import held_out_searches

        examples = held_out_searches(dataset.path)
        queries = {f"s{i:05d}": e["query"] for i, e in enumerate(examples)}
        qrels = {f"s{i:05d}": {str(e["item"]): 1} for i, e in enumerate(examples)}
        return catalog, JudgedQueries(queries, qrels), examples
    from recsys.search.adapt import held_out_items

    held = held_out_items(cfg, rows)
    held_rows = [{**r, "key": str(r["item_index"])} for r in rows if r["item_index"] in held]
    queries, qrels = shopper_queries(held_rows, n, QUERY_SEED, id_field="key")
    return catalog, JudgedQueries(queries, qrels), None


def encoders(name: str, cfg, dataset) -> dict[str, tuple[str | None, dict]]:
    """{"pretrained": (None, {}), "adapted": (folder, facts)}: the adapted encoder is the search
    stage's output on this dataset (run now when missing)."""
    from recsys import stages

    # The stage itself, every time: same inputs → same run, which resumes (and re-publishes) when
    # finished; an export made by another recipe is never picked up by accident.
    t0 = time.perf_counter()
    result = stages.search(cfg, dataset)
    if result is None:
        raise RuntimeError(f"the search stage trained nothing on {dataset.path}: is search.enabled on?")
    found = result.export
    seconds = round(time.perf_counter() - t0, 1)
    facts = {"export": str(found.path), "source": found.meta.extra.get("source", "logged searches"),
             "pairs": found.meta.extra.get("pairs"), "safeguard": found.meta.extra.get("safeguard"),
             "stage_seconds": seconds,
             "served": "safeguard" not in found.meta.extra or found.meta.extra["safeguard"]["ship"]}
    return {"pretrained": (None, {}), "adapted": (str(found.path), facts)}


def timed_eval(index, catalog, judged, mode: str, sample: int = 100) -> tuple[dict, float]:
    """ranx metrics of one mode, and the mean in-process ms per query (one thread, encoding included,
    on the first `sample` queries, query cache off)."""
    import torch

    from recsys.search.judged import METRICS, evaluate

    metrics = evaluate(index, catalog, judged, (mode,))[mode]
    torch.set_num_threads(1)
    texts = list(judged.queries.values())[:sample]
    index.cache.clear()
    t0 = time.perf_counter()
    for q in texts:
        qv = index.encode_queries([q])[0] if mode != "lexical" else None
        if mode == "lexical":
            index.lexical_scores(q)
        else:
            index.rank(q, qv, 10, mode)
    ms = (time.perf_counter() - t0) * 1e3 / max(1, len(texts))
    torch.set_num_threads(2)
    return {m: round(metrics[m], 4) for m in METRICS}, round(ms, 2)


def grid(name: str, catalog, judged, encoder_paths: dict, cfg) -> dict:
    from recsys.search.encoder import TextEncoder
    from recsys.search.engine import SearchIndex, SearchWeights
    from recsys.search.lexical import Analyzer

    base = SearchWeights.of(cfg.search)
    out: dict = {}
    vectors = {}
    for enc_name, (path, _) in encoder_paths.items():
        encoder = TextEncoder(path)
        t0 = time.perf_counter()
        vectors[enc_name] = (encoder, encoder.encode(catalog.texts, max_tokens=cfg.search.max_tokens).numpy())
        print(f"  {name}: {enc_name} encoder embedded {len(catalog.texts)} items in {time.perf_counter() - t0:.0f}s", flush=True)

    def run(label: str, mode: str, enc_name: str, lexical: dict, fusion: dict):
        encoder, vecs = vectors[enc_name]
        weights = SearchWeights(base.dense, base.lexical, base.personal, base.candidates, rrf_k=base.rrf_k,
                                analyzer=Analyzer(**lexical), **fusion)
        index = SearchIndex(catalog.texts, vecs, encoder, weights, max_tokens=cfg.search.max_tokens)
        metrics, ms = timed_eval(index, catalog, judged, mode)
        out[label] = {**metrics, "query_ms": ms}
        print(f"  {name:13s} {label:36s} nDCG@10 {metrics['ndcg@10']:.4f}  R@100 {metrics['recall@100']:.4f}  {ms:6.2f} ms", flush=True)

    for lex_name, lexical in LEXICAL.items():
        run(f"lexical.{lex_name}", "lexical", "pretrained", lexical, FUSIONS["weighted_best"])
    for enc_name in vectors:
        run(f"dense.{enc_name}", "dense", enc_name, {}, FUSIONS["weighted_best"])
    for enc_name in vectors:
        for lex_name, lexical in LEXICAL.items():
            for fusion_name, fusion in FUSIONS.items():
                run(f"hybrid.{lex_name}.{fusion_name}.{enc_name}", "hybrid", enc_name, lexical, fusion)
    return out


def personal_weights(cfg, dataset, catalog, examples, adapted_path: str, best: dict) -> dict:
    """hybrid_personal nDCG@10 (recsys.eval.metrics) on the synthetic shop's test searches by
    personal weight, with the chosen lexical analysis and fusion."""
    from recsys.artifacts import ArtifactStore
    from recsys.models import SeqRecModel
    from recsys.search.encoder import TextEncoder
    from recsys.search.engine import SearchIndex, SearchWeights, evaluate_search
    from recsys.search.lexical import Analyzer

    model = SeqRecModel.from_pretrained(ArtifactStore.of(cfg).latest("finetune", trained_on=dataset).path).eval()
    encoder = TextEncoder(adapted_path)
    vectors = encoder.encode(catalog.texts, max_tokens=cfg.search.max_tokens).numpy()
    out = {}
    for w in (0.0, 0.15, 0.3, 0.6, 1.0):
        base = SearchWeights.of(cfg.search)
        weights = SearchWeights(base.dense, base.lexical, w, base.candidates, rrf_k=base.rrf_k,
                                analyzer=Analyzer(**LEXICAL[best["lexical"]]), **FUSIONS[best["fusion"]])
        index = SearchIndex(catalog.texts, vectors, encoder, weights, max_tokens=cfg.search.max_tokens)
        m = evaluate_search(index, examples, model, variants=("hybrid_personal",))["hybrid_personal"]
        out[str(w)] = {"ndcg@10": round(m["ndcg@10"], 4), "recall@100": round(m["recall@100"], 4)}
        print(f"  synthetic personal weight {w}: nDCG@10 {m['ndcg@10']:.4f}", flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalogs", default=",".join(CONFIGS))
    parser.add_argument("--queries", type=int, default=500, help="shopper queries per real-text catalog")
    parser.add_argument("--best-lexical", default="stem_typos", help="for the personal-weight sweep")
    parser.add_argument("--best-fusion", default="weighted_bound", help="for the personal-weight sweep")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    from recsys import stages
    from recsys.config import load_config
    from recsys.runtime import init_ray, quiet_ray_data

    torch.set_num_threads(2)
    out_file = RESULTS / "search.json"
    result = json.loads(out_file.read_text()) if out_file.is_file() else {}
    real = result.setdefault("real_text", {})
    started = False
    for name in args.catalogs.split(","):
        cfg = load_config(CONFIGS[name], ["search.adapt.enabled=true", "search.adapt.holdout=0.2"])
        if not started:
            init_ray(cfg.cluster)
            quiet_ray_data()
            started = True
        try:
            dataset = stages.latest_dataset(cfg)
        except FileNotFoundError:
            dataset = stages.prepare(cfg)
        catalog, judged, examples = judged_set(name, cfg, dataset, args.queries)
        print(f"{name}: {len(catalog.texts)} items, {len(judged.queries)} queries", flush=True)
        paths = encoders(name, cfg, dataset)
        real[name] = {"items": len(catalog.texts), "queries": len(judged.queries),
                      "queries_from": "logged test searches" if examples else f"shopper_queries(seed {QUERY_SEED})",
                      "adapted_encoder": paths["adapted"][1], **grid(name, catalog, judged, paths, cfg)}
        if examples is not None:
            result["personal_weight"] = personal_weights(cfg, dataset, catalog, examples, paths["adapted"][0],
                                                         {"lexical": args.best_lexical, "fusion": args.best_fusion})
        out_file.write_text(json.dumps(result, indent=2))
    result["real_text_protocol"] = {
        "metrics": "ranx (recsys.search.judged): linear gain, unjudged = non-relevant, ties shuffled by a seed per query id",
        "latency": "query_ms: in-process mean per query, one thread, query encoding included, 100 queries, cache off",
    }
    out_file.write_text(json.dumps(result, indent=2))
    print(f"wrote {out_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
