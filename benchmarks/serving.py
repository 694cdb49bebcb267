"""Serving benchmark: the Ray Serve app against a bare FastAPI + torch process doing the same
retrieval and ranking compute, under closed-loop load from a separate process; and the ANN index
against exact search at 1M synthetic items.

    python -m benchmarks.serving [--config configs/demo.yaml] [--seconds 10] [--ann-items 1000000]

Writes benchmarks/results/serving.json:
  serve, bare            → c1, c16, c64 → p50_ms, p99_ms, qps, errors   (POST /recommend, k=10)
  bare_batched           → the bare process batching concurrent requests as @serve.batch does
  search                 → c1, c16, c64 of POST /search {query, user_id, k: 10} on the same Serve replica, same run
  replica_kill           → 2 replicas, 8 clients retrying once, one replica killed: requests, failed_after_retry,
                           longest_gap_without_2xx_s, recovery_to_90pct_s
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


def profile_replica(url: str, bodies_file: Path, seconds: float, out_file: Path) -> dict:
    """py-spy samples the (only) replica's process for `seconds` under one client: the share of
    samples in each of the request's parts, from the collapsed stacks (written to `out_file`)."""
    import shutil

    import ray

    from serving.serve_config import APP_NAME, DEPLOYMENT

    base = url.rsplit("/", 1)[0]
    replica = requests.get(base + "/healthz", timeout=5).json()["replica"]
    actor = ray.get_actor(f"SERVE_REPLICA::{APP_NAME}#{DEPLOYMENT}#{replica}", namespace="serve")
    pid = ray.get(actor.__ray_call__.remote(lambda _self: os.getpid()))
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    out_file.parent.mkdir(parents=True, exist_ok=True)
    recorder = subprocess.Popen([spy, "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "200", "-f", "raw", "-o", str(out_file)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    load = subprocess.run([sys.executable, "-m", "benchmarks.loadgen", "--url", url, "--bodies", str(bodies_file), "--concurrency", "1",
                           "--seconds", str(seconds)], cwd=REPO, capture_output=True, text=True, check=True)
    recorder.wait(timeout=60)
    return {"load": json.loads(load.stdout), **stack_shares(out_file)}


PARTS = {  # a sample's part: the innermost frame that is one of these (function, file)
    "query_encode": [("encode_queries", "search/engine.py")],
    "lexical_bm25": [("lexical_scores", "search/engine.py"), ("matched_terms", "search/lexical.py")],
    "search_rank": [("rank", "search/engine.py"), ("dense_top", "search/engine.py")],
    "user_encode": [("user_vectors", "online/retrieve.py")],
    "ann_search": [("retrieve", "online/retrieve.py")],
    "ctr_rank": [("logits", "online/rank.py")],
    "event_store": [("recent", "serving/recommender.py")],
    "prepare_and_filters": [("prepare_recommend", "online/engine.py"), ("prepare_search", "online/engine.py"), ("user_state", "online/engine.py")],
    "response_build": [("of", "serving/schemas.py"), ("serialize_response", "fastapi/routing.py"), ("item", "online/catalog.py")],
    "request_parse": [("request_body_to_args", "fastapi/"), ("_get_body", "fastapi/"), ("body", "starlette/requests.py")],
    "serve_and_asgi": [("", "ray/serve/"), ("", "starlette/"), ("", "uvicorn/"), ("", "fastapi/")],
}


def _part(frame: str) -> str | None:
    func, _, where = frame.partition(" (")
    for name, keys in PARTS.items():
        if any((not f or func == f) and path in where for f, path in keys):
            return name
    return None


def stack_shares(raw_file: Path) -> dict:
    """{part: share of busy samples} from py-spy's collapsed stacks ("frame;frame;… count" lines,
    outermost first; idle threads are not sampled): each sample goes to the innermost frame that
    names a part, the serve/ASGI frames only when nothing inside them does."""
    counts: dict[str, int] = {}
    total = 0
    for line in raw_file.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        total += int(n)
        parts = [p for p in (_part(f) for f in stack.split(";")) if p]
        specific = [p for p in parts if p != "serve_and_asgi"]
        part = specific[-1] if specific else (parts[-1] if parts else "other")
        counts[part] = counts.get(part, 0) + int(n)
    return {"samples": total, "shares": {k: round(v / total, 3) for k, v in sorted(counts.items(), key=lambda kv: -kv[1])} if total else {}}


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
            print("  py-spy profiles at one client:", flush=True)
            result["profile"] = {name: profile_replica(base + path, f, seconds, RESULTS / "profile" / f"{name}.raw.txt")
                                 for name, path, f in (("recommend", "/recommend", bodies_file), ("search", "/search", search_file))}
            print(f"  {json.dumps(result['profile'])}", flush=True)
        out_file.write_text(json.dumps(result))
    finally:
        serve.shutdown()
        ray.shutdown()


def replica_kill_child(config: str, bodies_file: Path, seconds: float, out_file: Path, kill_after_s: float = 6.0) -> None:
    """Two replicas under 8 retrying clients; one replica's actor is killed `kill_after_s` in
    (ray.kill: its worker process ends at once, as when a node or pod dies). Reports the load's
    retries, failures after a retry, the longest gap without a 2xx, and the seconds until the 2xx
    rate is back to 90% of its rate before the kill."""
    import ray
    from ray import serve

    from recsys.config import load_config
    from recsys.index import latest_index
    from recsys.runtime import init_ray
    from serving.deploy import deploy_config, wait_ready
    from serving.serve_config import APP_NAME, DEPLOYMENT, http_options, serve_config

    overrides = ["serve.ingress=haproxy", "serve.num_replicas=2"]
    cfg = load_config(config, overrides)
    release = latest_index(cfg)
    init_ray(cfg.cluster, serve=cfg.serve)
    serve.start(http_options=http_options(cfg.serve))
    deploy_config(serve_config(cfg, config, release.version, overrides))
    base = f"http://{cfg.serve.host}:{cfg.serve.port}"
    wait_ready(base + "/readyz")
    try:
        replicas = set()
        for _ in range(40):
            replicas.add(requests.get(base + "/healthz", timeout=5).json()["replica"])
        load = subprocess.Popen([sys.executable, "-m", "benchmarks.loadgen", "--url", base + "/recommend", "--bodies", str(bodies_file),
                                 "--concurrency", "8", "--seconds", str(seconds), "--retry", "--warmup-s", "0"],
                                cwd=REPO, stdout=subprocess.PIPE, text=True)
        time.sleep(kill_after_s)
        victim = sorted(replicas)[0]
        ray.kill(ray.get_actor(f"SERVE_REPLICA::{APP_NAME}#{DEPLOYMENT}#{victim}", namespace="serve"), no_restart=True)
        killed_at = kill_after_s
        report = json.loads(load.communicate(timeout=seconds + 120)[0])
        per_second = report["ok_per_second"]
        before = per_second[1 : int(killed_at)]
        baseline = sum(before) / max(len(before), 1)
        recovered = next((t for t in range(int(killed_at), len(per_second)) if per_second[t] >= 0.9 * baseline
                          and all(x >= 0.9 * baseline for x in per_second[t : t + 2])), None)
        report.update({"replicas": len(replicas), "killed": victim, "killed_at_s": killed_at,
                       "qps_before_kill": round(baseline, 1),
                       "recovery_to_90pct_s": None if recovered is None else recovered - int(killed_at)})
        out_file.write_text(json.dumps(report))
    finally:
        serve.shutdown()
        ray.shutdown()


def run_replica_kill(config: str, bodies_file: Path, seconds: float) -> dict:
    print("replica kill under load (2 replicas, 8 clients retrying once):", flush=True)
    out = RESULTS / ".serve-kill.json"
    subprocess.run([sys.executable, "-m", "benchmarks.serving", "--config", config, "--seconds", str(seconds), "--child", "kill",
                    "--bodies", str(bodies_file)], cwd=REPO, check=True)
    result = json.loads(out.read_text())
    out.unlink()
    print(f"  {result}", flush=True)
    return result


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
    if args.child == "kill":
        replica_kill_child(args.config, Path(args.bodies), max(args.seconds * 2, 20.0), RESULTS / ".serve-kill.json")
        return 0
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
    result["profile"] = result["serve"].pop("profile")
    result["bare"] = run_bare(args.config, bodies_file, args.seconds)
    result["bare_batched"] = run_bare(args.config, bodies_file, args.seconds, batched=True)
    result["serve_proxy"] = run_serve(args.config, "proxy", bodies_file, args.seconds)
    result["replica_kill"] = run_replica_kill(args.config, bodies_file, args.seconds)
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
