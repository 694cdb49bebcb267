"""Keyword search benchmark: quality of the four rankings on held-out searches, and `/search`
latency on Ray Serve under closed-loop load.

    python -m benchmarks.search [--config benchmarks/configs/search-shop.yaml] [--seconds 10]

Data: the synthetic shop with a 12k-item catalog (Amazon Beauty's size; Beauty's S3-Rec release
has no titles or searches). Its search sessions' queries are made from the wanted item's title with
typos, synonyms and dropped words, so lexical matching alone is not enough. The pipeline stages
run first when the config has no index yet: prepare → finetune (the recommender, for the personal
signal) → search (the encoder's contrastive fine-tuning) → index (item text vectors included).

Writes benchmarks/results/search.json:
  variants          → lexical, dense, hybrid, hybrid_personal → ndcg@10, recall@10, recall@100, mrr, queries
                      (the test split's searches, through the served text index and encoder)
  dense_pretrained  → the same metrics with the encoder before fine-tuning
  gain_vs_lexical   → hybrid_personal nDCG@10 ÷ lexical nDCG@10 − 1
  query_runtime     → what encodes queries (onnx: the index version's ONNX Runtime export)
  variants_torch_queries → the same metrics with queries encoded by torch (the export's parity)
  engine_ms         → in-process, one thread, per query: encode (query text + user history) and
                      search (candidates, mix, top k), p50/p99
  latency           → c1, c16 → p50_ms, p99_ms, qps, errors: POST /search {query, user_id, k 10}, query cache off
  latency_cached    → c16 with the query cache on (the replayed queries repeat)
  recommend_baseline → c16 of POST /recommend for the same users on the same replica (no text work)
  qps_ratio_search_to_recommend_c16
  p99_ms_c16        → latency.c16.p99_ms
  search            → the config's search settings (lexical analysis, fusion) these figures are of
(`real_text`, `personal_weight`: benchmarks/search_text.py, kept when this one rewrites the file.)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def ensure_pipeline(config: str):
    """The latest index version with a fine-tuned text index, running the stages when missing."""
    from recsys import stages
    from recsys.config import load_config
    from recsys.index import latest_index

    cfg = load_config(config)
    try:
        release = latest_index(cfg)
        if (release.manifest.get("search") or {}).get("encoder") == "fine-tuned":
            return release
    except FileNotFoundError:
        pass
    from recsys.runtime import init_ray, quiet_ray_data

    init_ray(cfg.cluster)
    quiet_ray_data()
    try:
        release, seconds = stages.build_servable(cfg)
        print("stage seconds:", seconds, flush=True)
        return release
    finally:
        import ray

        ray.shutdown()


def held_out_searches(dataset_path: Path) -> list[dict]:
    """(query, clicked item, the user's history before the search, user id) of the test split."""
    import pyarrow.parquet as pq

    ex = pq.read_table(dataset_path / "examples" / "search", filters=[("split", "=", "test")]).to_pandas()
    seqs = pq.read_table(dataset_path / "sequences", columns=["user_id", "items"]).to_pydict()
    history = dict(zip(seqs["user_id"], seqs["items"], strict=True))
    return [
        {"query": r.query, "item": int(r.item), "user_id": str(r.user_id), "history": [int(i) for i in history.get(r.user_id, [])][: r.history_len]}
        for r in ex.itertuples()
    ]


def quality(cfg, release, examples: list[dict]) -> dict:
    import torch

    from recsys.data.dataset import PreparedDataset
    from recsys.models import SeqRecModel
    from recsys.search.encoder import TextEncoder
    from recsys.search.engine import SearchIndex, SearchWeights, evaluate_search
    from recsys.search.text_index import catalog_texts, load_query_encoder, load_text_index

    torch.set_num_threads(2)
    meta = release.manifest["search"]
    dataset = PreparedDataset(release.manifest["dataset_path"])
    index, vectors = load_text_index(release.path, meta, cfg.index)
    weights = SearchWeights.of(cfg.search)
    encoder = TextEncoder(meta["encoder_path"])
    served_queries = load_query_encoder(release.path, meta)  # what replicas encode queries with (ONNX Runtime)
    engine = SearchIndex(catalog_texts(dataset), vectors, encoder, weights, index, cfg.search.max_tokens, query_encoder=served_queries)
    model = SeqRecModel.from_pretrained(release.manifest["model_path"]).eval()
    out = {"variants": evaluate_search(engine, examples, model),
           "query_runtime": (meta.get("query_encoder") or {}).get("runtime", "torch")}
    if served_queries is not None:  # the same rankings with queries encoded by torch: the export changes nothing
        torch_queries = SearchIndex(catalog_texts(dataset), vectors, encoder, weights, index, cfg.search.max_tokens)
        out["variants_torch_queries"] = evaluate_search(torch_queries, examples, model)
    texts, shipped = catalog_texts(dataset), TextEncoder()
    pretrained = SearchIndex(texts, shipped.encode(texts, max_tokens=cfg.search.max_tokens).numpy(), shipped, weights, max_tokens=cfg.search.max_tokens)
    out["dense_pretrained"] = evaluate_search(pretrained, examples)["dense"]
    # In-process per-query time of one personalised search, one thread (what a replica spends).
    torch.set_num_threads(1)
    table = model.item_vectors().detach().numpy()
    encode_ms, search_ms = [], []
    for e in examples[:200]:
        t0 = time.perf_counter()
        q = engine.encode_queries([e["query"]])[0]
        u = model.user_vectors([e["history"] or [0]])[0].detach().numpy()
        t1 = time.perf_counter()
        engine.rank(e["query"], q, 10, "hybrid_personal", lambda c, u=u: table[c - 1] @ u)
        encode_ms.append((t1 - t0) * 1e3)
        search_ms.append((time.perf_counter() - t1) * 1e3)
    out["engine_ms"] = {name: {"p50": round(float(np.percentile(v, 50)), 2), "p99": round(float(np.percentile(v, 99)), 2)}
                        for name, v in (("encode", encode_ms), ("search", search_ms))}
    return out


def serve_child(config: str, cache: int, levels: list[int], bodies_file: Path, seconds: float, out_file: Path) -> None:
    """In its own process: a fresh Ray and Serve app per setting."""
    import ray
    from ray import serve

    from benchmarks.loadgen import load_levels
    from benchmarks.serving import start_app

    cfg, release, base = start_app(config, [f"search.query_cache_size={cache}"])
    try:
        result = load_levels(base + "/search", bodies_file, seconds, levels, cwd=REPO)
        if cache == 0:  # the baseline on the same replica: /recommend for the same users (no text encoder)
            users = [{"user_id": b["user_id"], "k": 10} for b in json.loads(bodies_file.read_text())]
            users_file = bodies_file.with_name(".recommend-bodies.json")
            users_file.write_text(json.dumps(users))
            print("POST /recommend, same users, same replica:", flush=True)
            result["recommend"] = load_levels(base + "/recommend", users_file, seconds, [16], cwd=REPO)
            users_file.unlink()
        out_file.write_text(json.dumps(result))
    finally:
        serve.shutdown()
        ray.shutdown()


def run_serve(config: str, cache: int, levels: list[int], bodies_file: Path, seconds: float) -> dict:
    print(f"POST /search on Ray Serve, query cache {cache}:", flush=True)
    out = RESULTS / f".search-{cache}.json"
    subprocess.run([sys.executable, "-m", "benchmarks.search", "--config", config, "--seconds", str(seconds), "--child", str(cache),
                    "--levels", ",".join(map(str, levels)), "--bodies", str(bodies_file)], cwd=REPO, check=True)
    result = json.loads(out.read_text())
    out.unlink()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="benchmarks/configs/search-shop.yaml")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--levels", help=argparse.SUPPRESS)
    parser.add_argument("--bodies", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.child:
        levels = [int(c) for c in args.levels.split(",")]
        serve_child(args.config, int(args.child), levels, Path(args.bodies), args.seconds, RESULTS / f".search-{args.child}.json")
        return 0
    from recsys.config import load_config

    RESULTS.mkdir(parents=True, exist_ok=True)
    cfg = load_config(args.config)
    release = ensure_pipeline(args.config)
    examples = held_out_searches(Path(release.manifest["dataset_path"]))
    result: dict = {"config": args.config, "version": release.version, "items": release.manifest["items"],
                    "search": cfg.search.model_dump(include={"lexical", "fusion", "lexical_norm", "dense_weight", "lexical_weight", "personal_weight"}),
                    "text_index": release.manifest["search"], "test_searches": len(examples)}
    result.update(quality(cfg, release, examples))
    v = result["variants"]
    result["gain_vs_lexical"] = round(v["hybrid_personal"]["ndcg@10"] / v["lexical"]["ndcg@10"] - 1, 4)
    print(json.dumps({k: result[k] for k in ("variants", "dense_pretrained", "gain_vs_lexical", "engine_ms")}, indent=1), flush=True)
    bodies_file = RESULTS / ".search-bodies.json"
    bodies_file.write_text(json.dumps([{"query": e["query"], "user_id": e["user_id"], "k": 10} for e in examples]))
    result["endpoint"] = "POST /search {query, user_id, k: 10} (hybrid_personal), the test split's queries in turn"
    result["load"] = f"closed loop, aiohttp clients in a separate process (benchmarks/loadgen.py), {args.seconds:g} s per level"
    result["latency"] = run_serve(args.config, 0, [1, 16], bodies_file, args.seconds)
    result["latency_cached"] = run_serve(args.config, cfg.search.query_cache_size or 4096, [16], bodies_file, args.seconds)
    result["recommend_baseline"] = result["latency"].pop("recommend")
    result["qps_ratio_search_to_recommend_c16"] = round(result["latency"]["c16"]["qps"] / result["recommend_baseline"]["c16"]["qps"], 3)
    result["p99_ms_c16"] = result["latency"]["c16"]["p99_ms"]
    bodies_file.unlink()
    out = RESULTS / "search.json"
    if out.is_file():  # keep what benchmarks/search_text.py wrote (the real-text grid)
        kept = json.loads(out.read_text())
        result.update({k: kept[k] for k in ("real_text", "real_text_protocol", "personal_weight") if k in kept})
    out.write_text(json.dumps(result, indent=2))
    print(f"\nnDCG@10 lexical {v['lexical']['ndcg@10']:.4f} → hybrid+personal {v['hybrid_personal']['ndcg@10']:.4f} "
          f"({result['gain_vs_lexical']:+.1%}); /search p99 at 16 clients {result['p99_ms_c16']} ms")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
