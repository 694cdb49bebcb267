"""Serving benchmark: the Ray Serve app against a bare FastAPI + torch process doing the same
retrieval and ranking compute, under closed-loop load from a separate process; and the ANN index
against exact search at 1M synthetic items.

    python -m benchmarks.serving [--config configs/demo.yaml] [--seconds 10] [--ann-items 1000000]

Writes benchmarks/results/serving.json:
  serve, bare            → c1, c16, c64 → p50_ms, p99_ms, qps, errors   (POST /recommend, k=10)
  bare_batched           → the bare process batching concurrent requests as @serve.batch does
  search                 → c1, c16, c64 of POST /search {query, user_id, k: 10} on the same Serve replica, same run
  serve_proxy            → the same app behind Serve's Python proxy instead of HAProxy (the hop measured)
  throughput_ratio_c16   → serve qps ÷ bare qps at 16 clients (and ratios: the issue's targets, from this run)
  ann                    → items, recall_at_100, speedup_vs_exact, ann_qps, exact_qps, kind, build_s
                           (--skip-ann keeps the previous run's entry, marked so)

The served model is the config's latest index version; without one, the pipeline stages build it
first (prepare → pretrain → finetune → index, as `make demo` does).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
CONCURRENCY = (1, 16, 64)


def ensure_index(config: str):
    from recsys import stages
    from recsys.config import load_config
    from recsys.index import latest_index

    cfg = load_config(config)
    try:
        return latest_index(cfg)
    except FileNotFoundError:
        pass
    from recsys.runtime import init_ray, quiet_ray_data

    init_ray(cfg.cluster)
    quiet_ray_data()
    try:
        return stages.build_servable(cfg)[0]
    finally:
        import ray

        ray.shutdown()


def request_bodies(release, n: int = 2000) -> list[dict]:
    import pyarrow.parquet as pq

    users = pq.read_table(Path(release.manifest["dataset_path"]) / "sequences", columns=["user_id"])["user_id"].to_pylist()
    return [{"user_id": str(u), "k": 10} for u in users[:n]]


def search_bodies(release, users: list[dict], n: int = 2000) -> list[dict]:
    """Shopper-style queries (recsys.search.pseudo_queries: words of a random item's title, some
    misspelt) from the same users as /recommend's bodies: personalised search, as the app defaults to."""
    import pyarrow.parquet as pq

    from recsys.search.pseudo_queries import shopper_queries

    rows = pq.read_table(Path(release.manifest["dataset_path"]) / "items.parquet", columns=["item_id", "title", "category", "brand"]).to_pylist()
    queries = list(shopper_queries(rows, n, seed=0)[0].values())
    return [{"query": q, "user_id": u["user_id"], "k": 10} for q, u in zip(queries, users, strict=False)]


def load_levels(url: str, bodies_file: Path, seconds: float) -> dict:
    from benchmarks.loadgen import load_levels as levels

    return levels(url, bodies_file, seconds, CONCURRENCY, cwd=REPO)


def serve_child(config: str, ingress: str, bodies_file: Path, seconds: float, out_file: Path, search_file: Path | None = None) -> None:
    """In its own process: Serve's ingress mode is fixed when Ray starts."""
    import ray
    from ray import serve

    from recsys.config import load_config
    from recsys.index import latest_index
    from recsys.runtime import init_ray
    from serving.deploy import deploy_config, wait_ready
    from serving.serve_config import http_options, serve_config

    cfg = load_config(config, [f"serve.ingress={ingress}"])
    release = latest_index(cfg)
    init_ray(cfg.cluster, serve=cfg.serve)
    serve.start(http_options=http_options(cfg.serve))
    deploy_config(serve_config(cfg, config, release.version))
    base = f"http://{cfg.serve.host}:{cfg.serve.port}"
    wait_ready(base + "/readyz")
    try:
        result = load_levels(base + "/recommend", bodies_file, seconds)
        result["version"] = release.version
        if search_file is not None:
            print("  /search on the same replica:", flush=True)
            result["search"] = load_levels(base + "/search", search_file, seconds)
        out_file.write_text(json.dumps(result))
    finally:
        serve.shutdown()
        ray.shutdown()


def run_serve(config: str, ingress: str, bodies_file: Path, seconds: float, search_file: Path | None = None) -> dict:
    print(f"Ray Serve ({ingress} ingress):", flush=True)
    out = RESULTS / f".serve-{ingress}.json"
    extra = ["--search-bodies", str(search_file)] if search_file else []
    subprocess.run([sys.executable, "-m", "benchmarks.serving", "--config", config, "--seconds", str(seconds), "--child", ingress,
                    "--bodies", str(bodies_file), *extra], cwd=REPO, check=True)
    result = json.loads(out.read_text())
    out.unlink()
    return result


def run_bare(config: str, bodies_file: Path, seconds: float, port: int = 8100, batched: bool = False) -> dict:
    print(f"bare FastAPI + torch (uvicorn, one process{', batched' if batched else ''}):", flush=True)
    server = subprocess.Popen([sys.executable, "-m", "benchmarks.bare_server", "--config", config, "--port", str(port),
                               *(["--batched"] if batched else [])], cwd=REPO)
    try:
        url = f"http://127.0.0.1:{port}/recommend"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                requests.post(url, json={"user_id": "warm-up", "k": 1}, timeout=2)
                break
            except requests.RequestException:
                time.sleep(0.5)
        return load_levels(url, bodies_file, seconds)
    finally:
        server.terminate()
        server.wait(timeout=30)


def run_ann(items: int, dim: int, queries: int, kind: str) -> dict:
    """Clustered synthetic vectors (10k centres, as trained item embeddings cluster by category)."""
    import faiss
    import numpy as np

    from recsys.config import IndexConfig
    from recsys.index.ann import ItemIndex, queries_per_second, recall_against_exact

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(10_000, dim)).astype(np.float32)

    def draw(n):
        return (centers[rng.integers(len(centers), size=n)] + 0.5 * rng.normal(size=(n, dim))).astype(np.float32)

    vectors, q = draw(items), draw(queries)
    print(f"ANN: {items:,} items × {dim}, {queries} queries, {kind}", flush=True)
    cfg = IndexConfig(kind=kind)
    started = time.perf_counter()
    index = ItemIndex.build(vectors, cfg)
    build_s = time.perf_counter() - started
    recall = recall_against_exact(index, vectors, q, 100)
    faiss.omp_set_num_threads(1)  # one query per call on one thread, as a serving replica searches
    exact = ItemIndex.build(vectors, IndexConfig(kind="flat"))
    result = {
        "items": items, "dim": dim, "queries": queries, "kind": kind, "params": cfg.model_dump(mode="json"),
        "build_s": round(build_s, 1),
        "recall_at_100": round(recall, 4),
        "ann_qps": round(queries_per_second(index, q, 100), 1),
        "exact_qps": round(queries_per_second(exact, q[:50], 100), 1),
    }
    result["speedup_vs_exact"] = round(result["ann_qps"] / result["exact_qps"], 1)
    print(f"  {result}", flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--ann-items", type=int, default=1_000_000)
    parser.add_argument("--ann-kind", default="hnsw", choices=["hnsw", "ivf"])
    parser.add_argument("--skip-ann", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--bodies", help=argparse.SUPPRESS)
    parser.add_argument("--search-bodies", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.child:
        serve_child(args.config, args.child, Path(args.bodies), args.seconds, RESULTS / f".serve-{args.child}.json",
                    Path(args.search_bodies) if args.search_bodies else None)
        return 0
    RESULTS.mkdir(parents=True, exist_ok=True)
    release = ensure_index(args.config)
    bodies_file = RESULTS / ".bodies.json"
    bodies = request_bodies(release)
    bodies_file.write_text(json.dumps(bodies))
    search_file = RESULTS / ".search-bodies.json"
    search_file.write_text(json.dumps(search_bodies(release, bodies)))
    out = RESULTS / "serving.json"
    previous = json.loads(out.read_text()) if out.is_file() else {}
    result: dict = {"config": args.config, "version": release.version, "items": release.manifest["items"],
                    "endpoint": "POST /recommend {user_id, k: 10}", "search_endpoint": "POST /search {query, user_id, k: 10}",
                    "seconds_per_level": args.seconds,
                    "load": "closed loop, aiohttp clients in a separate process (benchmarks/loadgen.py)"}
    result["serve"] = run_serve(args.config, "haproxy", bodies_file, args.seconds, search_file)
    result["search"] = result["serve"].pop("search")
    result["bare"] = run_bare(args.config, bodies_file, args.seconds)
    result["bare_batched"] = run_bare(args.config, bodies_file, args.seconds, batched=True)
    result["serve_proxy"] = run_serve(args.config, "proxy", bodies_file, args.seconds)
    s_, b, bb, q = result["serve"], result["bare"], result["bare_batched"], result["search"]
    result["throughput_ratio_c16"] = round(s_["c16"]["qps"] / b["c16"]["qps"], 3)
    result["ratios"] = {
        "recommend_c1_p50_vs_bare": round(s_["c1"]["p50_ms"] / b["c1"]["p50_ms"], 3),
        "recommend_c16_qps_vs_bare_batched": round(s_["c16"]["qps"] / bb["c16"]["qps"], 3),
        "search_c16_p99_vs_recommend": round(q["c16"]["p99_ms"] / s_["c16"]["p99_ms"], 3),
        "search_c16_qps_vs_recommend": round(q["c16"]["qps"] / s_["c16"]["qps"], 3),
    }
    bodies_file.unlink()
    search_file.unlink()
    if not args.skip_ann:
        from recsys.config import load_config

        result["ann"] = run_ann(args.ann_items, load_config(args.config).model.hidden_size, 300, args.ann_kind)
    elif "ann" in previous:
        result["ann"] = {**previous["ann"], "from_previous_run": True}
    out.write_text(json.dumps(result, indent=2))
    print(f"\nserve c1 p50 {s_['c1']['p50_ms']} ms · c16 {s_['c16']['qps']} QPS (bare {b['c16']['qps']}, batched {bb['c16']['qps']})"
          f" · search c16 {q['c16']['qps']} QPS p99 {q['c16']['p99_ms']} ms · ratios {result['ratios']}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
