"""Serving benchmark: the Ray Serve app against a bare FastAPI + torch process doing the same
retrieval and ranking compute, under closed-loop load from a separate process; and the ANN index
against exact search at 1M synthetic items.

    python -m benchmarks.serving [--config configs/demo.yaml] [--seconds 10] [--ann-items 1000000] [--only-replica-kill]

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
    """Shopper-style queries (recsys.search.pseudo_queries: 1–3 words of a random item's text, some
    misspelt) from the same users as /recommend's bodies: personalised search, as the app defaults to.
    The item text is what search indexes (recsys.search.encoder.row_text): on the demo's Amazon
    Beauty file, which has no titles, that is the attribute values."""
    import pyarrow.parquet as pq

    from recsys.search.encoder import row_text
    from recsys.search.pseudo_queries import shopper_queries

    rows = pq.read_table(Path(release.manifest["dataset_path"]) / "items.parquet").to_pylist()
    queries = list(shopper_queries([{"item_id": r["item_id"], "title": row_text(r)} for r in rows], n, seed=0)[0].values())
    if not queries:
        raise SystemExit("the catalog has no item text to make search queries from")
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
    report = json.loads(load.stdout)
    return {"load": report, **stack_shares(out_file, 200.0, report["requests"])}


PARTS = {  # a sample's part: the innermost frame that is one of these functions (py-spy's qualified names)
    "query_encode": ["SearchIndex.encode_queries"],
    "text_ann_search": ["SearchIndex.dense_top"],
    "lexical_bm25": ["SearchIndex.lexical_scores", "BM25Index.matched_terms"],
    "search_fusion": ["SearchIndex.rank"],
    "user_encode": ["Retriever.user_vectors"],
    "ann_search": ["Retriever.retrieve"],
    "ctr_rank": ["CTRRanker.logits"],
    "event_store": ["_RemoteEvents.recent", "_LocalEvents.recent"],
    "prepare_and_filters": ["OnlineEngine.prepare_recommend", "OnlineEngine.prepare_search", "OnlineEngine.user_state"],
    "response_build": ["RecommendResponse.of", "serialize_response", "OnlineEngine.lexical_terms"],
    "request_parse": ["request_body_to_args", "Request.body", "Request.json"],
    "metrics": ["Metric._record", "ServingMetrics.request", "ServingMetrics.stages"],
}
REQUEST_PATH = ("GuardMiddleware.__call__", "serving/http.py")  # the app's outermost frame: every request passes it


def _part(frame: str) -> str | None:
    func = frame.partition(" (")[0]
    return next((name for name, funcs in PARTS.items() if func in funcs), None)


def stack_shares(raw_file: Path, rate_hz: float = 200.0, requests_done: int = 0) -> dict:
    """Where a replica's samples went, from py-spy's collapsed stacks ("frame;frame;… count",
    outermost first). Samples under the app's middleware are the requests' own path, split by
    the innermost frame that names a part (`PARTS`; "app_other": FastAPI, pydantic, the rest);
    everything else is the replica's other threads and its event loop outside the app (py-spy
    counts some waiting threads as busy, so that share is an upper bound)."""
    path: dict[str, int] = {}
    total = outside = 0
    for line in raw_file.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        count, frames = int(n), stack.split(";")
        total += count
        if not any(f.startswith(REQUEST_PATH[0] + " (") and REQUEST_PATH[1] in f for f in frames):
            outside += count
            continue
        parts = [p for p in (_part(f) for f in frames) if p]
        part = parts[-1] if parts else "app_other"
        path[part] = path.get(part, 0) + count
    inside = total - outside
    out = {"samples": total, "request_path_share": round(inside / total, 3) if total else 0.0,
           "request_path": {k: round(v / inside, 3) for k, v in sorted(path.items(), key=lambda kv: -kv[1])} if inside else {}}
    if requests_done:
        out["request_path_ms_per_request"] = round(inside / rate_hz / requests_done * 1000, 2)
        out["ms_per_request"] = {k: round(v / rate_hz / requests_done * 1000, 2) for k, v in sorted(path.items(), key=lambda kv: -kv[1])}
    return out


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


def start_app(config: str, overrides: list[str]):
    """Ray, Serve and the app on the config's latest index version, as `serving.deploy` deploys it;
    (cfg, release, base URL) once /readyz answers. The caller shuts Serve and Ray down."""
    from ray import serve

    from recsys.config import load_config
    from recsys.index import latest_index
    from recsys.runtime import init_ray
    from serving.deploy import deploy_config, wait_ready
    from serving.serve_config import http_options, serve_config

    cfg = load_config(config, overrides)
    release = latest_index(cfg)
    init_ray(cfg.cluster, serve=cfg.serve)
    serve.start(http_options=http_options(cfg.serve))
    deploy_config(serve_config(cfg, config, release.version, overrides))
    base = f"http://{cfg.serve.host}:{cfg.serve.port}"
    wait_ready(base + "/readyz")
    return cfg, release, base


def replica_kill_child(config: str, bodies_file: Path, seconds: float, out_file: Path, kill_after_s: float = 6.0) -> None:
    """Two replicas under 8 retrying clients; one replica's actor is killed `kill_after_s` in
    (ray.kill: its worker process ends at once, as when a node or pod dies). Reports the load's
    retries, failures after a retry, the longest gap without a 2xx, and the seconds until the 2xx
    rate is back to 90% of its rate before the kill."""
    import ray
    from ray import serve

    from serving.serve_config import APP_NAME, DEPLOYMENT

    _, _, base = start_app(config, ["serve.ingress=haproxy", "serve.num_replicas=2"])
    try:
        deadline = time.monotonic() + 120  # both replicas RUNNING (Serve's status API) before the load starts
        while time.monotonic() < deadline:
            app = serve.status().applications.get(APP_NAME)
            if app and app.deployments[DEPLOYMENT].replica_states.get("RUNNING", 0) == 2:
                break
            time.sleep(0.25)
        replicas = set()
        for _ in range(200):
            replicas.add(requests.get(base + "/healthz", timeout=5).json()["replica"])
            if len(replicas) == 2:
                break
        load = subprocess.Popen([sys.executable, "-m", "benchmarks.loadgen", "--url", base + "/recommend", "--bodies", str(bodies_file),
                                 "--concurrency", "8", "--seconds", str(seconds), "--retry", "--warmup-s", "0"],
                                cwd=REPO, stdout=subprocess.PIPE, text=True)
        time.sleep(kill_after_s)
        victim = sorted(replicas)[0]
        ray.kill(ray.get_actor(f"SERVE_REPLICA::{APP_NAME}#{DEPLOYMENT}#{victim}", namespace="serve"), no_restart=True)
        report = json.loads(load.communicate(timeout=seconds + 120)[0])
        report.update({"replicas": len(replicas), "killed": victim, "killed_at_s": kill_after_s,
                       **recovery(report["ok_per_second"], int(kill_after_s))})
        out_file.write_text(json.dumps(report))
    finally:
        serve.shutdown()
        ray.shutdown()


def recovery(per_second: list[int], killed_at: int, level: float = 0.9) -> dict:
    """From 2xx answers per second: the rate before the kill (its first second, a warm-up, left
    out), the first second after the kill below `level` of it (the dip), and the seconds from the
    dip until two seconds in a row are back at `level` (None: not within the load's window)."""
    before = per_second[1:killed_at]
    baseline = sum(before) / max(len(before), 1)
    last = len(per_second) - 1  # the final second is partial
    dip = next((t for t in range(killed_at, last) if per_second[t] < level * baseline), None)
    back = None if dip is None else next(
        (t for t in range(dip + 1, last - 1) if min(per_second[t], per_second[t + 1]) >= level * baseline), None)
    return {"qps_before_kill": round(baseline, 1), "dip_at_s": dip,
            "qps_after_dip": round(sum(per_second[dip:last]) / max(last - dip, 1), 1) if dip is not None else None,
            "recovery_to_90pct_s": None if back is None else back - dip}


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
    parser.add_argument("--only-replica-kill", action="store_true",
                        help="re-measure the replica kill alone and replace that entry of serving.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--bodies", help=argparse.SUPPRESS)
    parser.add_argument("--search-bodies", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.child == "kill":  # a window long enough for the replacement replica to load and take load
        replica_kill_child(args.config, Path(args.bodies), max(args.seconds * 4, 40.0), RESULTS / ".serve-kill.json")
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
    if args.only_replica_kill:
        previous["replica_kill"] = {**run_replica_kill(args.config, bodies_file, args.seconds), "measured_alone": True}
        bodies_file.unlink()
        search_file.unlink()
        out.write_text(json.dumps(previous, indent=2))
        print(f"wrote {out} (replica_kill only)")
        return 0
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
