"""`recsys demo` (`make demo`): the whole path on a local Ray, then live requests against Ray Serve.

prepare → pretrain → finetune → evaluate → search → index → (forecast, ads) → serve → POST /recommend, /events, /items, /search, /ads
→ shutdown.

The command lives here, above both the library and the Serve app: `serving` registers it with the
`recsys` CLI through the entry-point group `recsys.commands` (pyproject.toml), so `recsys/` never
imports `serving`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

import requests

from recsys.config import load_config


def _banner(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


def _epochs(metrics: dict) -> str:
    return "\n".join(
        f"  epoch {h['epoch']}: loss {h['loss']:.4f}  {h['sequences_per_s']:.0f} seq/s  {h['epoch_seconds']:.0f}s"
        for h in metrics["history"]
    )


def register(commands, parent: argparse.ArgumentParser) -> None:
    """Entry point `recsys.commands:demo`: add `demo` (with --config/--set from the CLI's `parent`)."""
    text = "the whole path on a local Ray (data → train → evaluate → index), then live HTTP requests against Ray Serve"
    commands.add_parser("demo", parents=[parent], help=text, description=text).set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    """`recsys demo`: 0 when every step answered; 1 with a message (RECSYS_DEBUG=1: the traceback)."""
    cfg = load_config(args.config, args.overrides)  # a ConfigError: the CLI prints `error: ...` and exits 2
    try:
        return _run(cfg, args)
    except Exception as exc:  # the demo's user gets a message; RECSYS_DEBUG=1 shows the traceback
        if os.environ.get("RECSYS_DEBUG"):
            raise
        print(f"\nerror: demo failed: {type(exc).__name__}: {exc}\n(set RECSYS_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


def _run(cfg, args) -> int:
    import ray
    from ray import serve

    from recsys import stages
    from recsys.eval.evaluate import format_report
    from recsys.runtime import init_ray, quiet_ray_data
    from serving.app import build_app
    from serving.deploy import wait_ready
    from serving.serve_config import http_options

    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    if cfg.serve.ingress == "haproxy" and shutil.which("haproxy") is None:
        print("note: haproxy is not installed (apt-get install haproxy); serving through Serve's Python proxy instead")
        cfg.serve.ingress = "proxy"
    tokens = _demo_tokens(cfg)  # before Ray starts: its workers (the replicas) inherit the variables
    overrides = [*args.overrides, "serve.auth.enabled=true"]
    init_ray(cfg.cluster, serve=cfg.serve)
    quiet_ray_data()
    try:
        t = time.perf_counter()
        _banner("1/8 prepare data (Ray Data)")
        dataset = stages.prepare(cfg)
        print(json.dumps({"dataset": str(dataset.path), **dataset.manifest["counts"]}, indent=2))
        timings["prepare"] = time.perf_counter() - t

        t = time.perf_counter()
        _banner(f"2/8 pretrain: masked items, ZeRO-{cfg.pretrain.zero_stage}, {cfg.cluster.train_workers} workers")
        pre = stages.pretrain(cfg, dataset)
        print("skipped (pretrain.enabled: false)" if pre is None else _epochs(pre.metrics))
        timings["pretrain"] = time.perf_counter() - t

        t = time.perf_counter()
        _banner(f"3/8 fine-tune: next item, ZeRO-{cfg.finetune.zero_stage}")
        fine = stages.finetune(cfg, dataset, init_from=pre.model_path if pre else None)
        print(_epochs(fine.metrics))
        print(f"model: {fine.model_path}")
        timings["finetune"] = time.perf_counter() - t

        t = time.perf_counter()
        protocol = "leave-one-out" if cfg.data.split.mode == "leave_one_out" else "global time cut"
        _banner(f"4/8 evaluate: {protocol}, {'sampled' if cfg.eval.sampled_negatives else 'full'} ranking")
        report = stages.evaluate(cfg, fine.model_path)
        print(format_report(report))
        m = report["metrics"]["model"]
        print(f"\nHR@10 = {m['hr@10']:.4f}   NDCG@10 = {m['ndcg@10']:.4f}")
        timings["evaluate"] = time.perf_counter() - t

        t = time.perf_counter()
        _banner("5/8 search: the text encoder fine-tuned on (query, clicked item) pairs, when the logs hold searches")
        encoder = stages.search(cfg, dataset)
        print(f"encoder: {encoder.model_path}" if encoder else "no searches in these logs: the index embeds item texts with the pretrained MiniLM")
        timings["search"] = time.perf_counter() - t

        t = time.perf_counter()
        _banner(f"6/8 index: item vectors → FAISS ({cfg.index.kind})")
        release = stages.index(cfg, fine.model_path)
        m = release.manifest
        print(f"index {release.version}: {m['kind']}, {m['items']} items, recall@100 {m['recall_at_100']:.4f} against exact search")
        if m.get("search"):
            st = m["search"]
            print(f"text index: {st['encoder']} encoder, {st['items']} item texts, recall@100 {st['recall_at_100']:.4f}, embedded in {st['encode_s']:.0f}s")
        timings["index"] = time.perf_counter() - t

        t = time.perf_counter()
        forecast = None
        if cfg.forecast.enabled:
            _banner(f"7/8 forecast: weekly demand per product, {cfg.forecast.model} (the backtest: recsys forecast)")
            from recsys.forecast.report import format_backtest

            # The demo publishes a forecast; the backtest (a fit per origin and forecaster) is
            # `recsys forecast --config …`'s business.
            quick = cfg.model_copy(deep=True)
            quick.forecast.backtest.enabled = False
            forecast = stages.forecast(quick, dataset)
            print(format_backtest(forecast.manifest))
        else:
            _banner("7/8 forecast: skipped (forecast.enabled: false)")
        timings["forecast"] = time.perf_counter() - t

        t = time.perf_counter()
        ads = None
        if cfg.ads.enabled:
            _banner("ads: the ad world, the pCTR model fine-tuned from the retrieval model, calibrated (docs/ads.md)")
            try:
                ads = stages.ads(cfg).export
                cal = ads.meta.extra["calibration_valid"]
                print(f"ads model {ads.version}: valid AUC {cal['auc']:.3f}, ECE {cal['ece_before']:.4f} → {cal['ece_after']:.4f} calibrated")
            except ValueError as exc:  # a catalog without categories (Amazon Beauty): nothing to target
                print(f"skipped: {exc}")
        timings["ads"] = time.perf_counter() - t

        t = time.perf_counter()
        _banner(f"8/8 serve: Ray Serve ({cfg.serve.ingress} ingress), live HTTP requests")
        serve.start(http_options=http_options(cfg.serve))
        serve.run(build_app({"config": args.config, "overrides": overrides, "index_version": release.version}),
                  name="recommender", route_prefix=cfg.serve.route_prefix)
        base = f"http://{cfg.serve.host}:{cfg.serve.port}{cfg.serve.route_prefix.rstrip('/')}"
        wait_ready(base + "/readyz")
        refused = requests.post(base + "/events", json={"user_id": "u", "item_id": "x", "event": "click"}, timeout=30)
        print(f"auth is on (serve.auth): POST {base}/events without a token → {refused.status_code} {refused.json()['error']}")
        print("tokens of this run (set RECSYS_READ_TOKEN / RECSYS_WRITE_TOKEN / RECSYS_ADMIN_TOKEN to choose them):")
        for role, value in tokens.items():
            print(f"  {role}: {value}")
        print(f"  try: curl -s -H 'Authorization: Bearer {tokens['read']}' -H 'Content-Type: application/json' "
              f"-d '{{\"user_id\": \"someone\", \"k\": 3}}' {base}/recommend")
        http = requests.Session()  # the demo writes events and items below: a write token
        http.headers["Authorization"] = f"Bearer {tokens['write']}"
        user = str(dataset.read_split("test")["user_id"].iloc[0])
        body = {"user_id": user, "k": 5, "explain": True}
        answer = http.post(base + "/recommend", json=body, timeout=30)
        print(f"POST {base}/recommend {json.dumps(body)} → {answer.status_code}")
        print(json.dumps(answer.json(), indent=2)[:3000])
        answer.raise_for_status()
        clicked = answer.json()["items"][-1]["item_id"]
        event = {"user_id": user, "item_id": clicked, "event": "click"}
        print(f"POST {base}/events {json.dumps(event)} → {http.post(base + '/events', json=event, timeout=30).status_code}")
        after = http.post(base + "/recommend", json={"user_id": user, "k": 5}, timeout=30).json()
        print(f"next /recommend for {user}: {[i['item_id'] for i in after['items']]} (was {[i['item_id'] for i in answer.json()['items']]})")
        cold = http.post(base + "/recommend", json={"user_id": "someone-new", "k": 3}, timeout=30).json()
        print(f"unknown user → cold_start={cold['cold_start']}, {[i['item_id'] for i in cold['items']]}")
        if m.get("search"):
            _search_demo(base, dataset, user, http)
        if forecast is not None:
            _forecast_demo(base, forecast, http)
        if ads is not None:
            _ads_demo(base, user, http)
        print(f"OpenAPI docs: {base}/docs")
        timings["serve"] = time.perf_counter() - t
    finally:
        serve.shutdown()
        ray.shutdown()
    timings["total"] = time.perf_counter() - t_all
    _banner("done")
    print("  ".join(f"{k} {v:.0f}s" for k, v in timings.items()))
    return 0


def _demo_tokens(cfg) -> dict[str, str]:
    """The role tokens in the environment (each generated when unset): role → token."""
    import os
    import secrets

    out = {}
    for role, name in cfg.serve.auth.token_env.items():
        os.environ.setdefault(name, secrets.token_urlsafe(24))
        out[role] = os.environ[name].split(",")[0]
    return out


def _forecast_demo(base: str, release, http) -> None:
    """GET /forecast for the product that sold most in the history's last weeks."""
    import pandas as pd

    history = pd.read_parquet(release.path / "history.parquet")
    top = history[history["ds"] == history["ds"].max()].nlargest(1, "y")["unique_id"].iloc[0]
    answer = http.get(f"{base}/forecast/{top}", params={"horizon": 4}, timeout=30)
    print(f"GET {base}/forecast/{top}?horizon=4 → {answer.status_code}")
    answer.raise_for_status()
    print(json.dumps(answer.json(), indent=2)[:1500])


def _ads_demo(base: str, user: str, http) -> None:
    """POST /ads for the demo user: three slots, priced by the auction."""
    body = {"user_id": user, "slots": [0, 1, 2]}
    answer = http.post(base + "/ads", json=body, timeout=30)
    print(f"POST {base}/ads {json.dumps(body)} → {answer.status_code}")
    answer.raise_for_status()
    print(json.dumps(answer.json(), indent=2)[:2000])


def _search_demo(base: str, dataset, user: str, http) -> None:
    """A new item (cold start), found by its title and searched for personally."""
    import pyarrow.parquet as pq

    # pyarrow rows, not pandas: a missing category stays None, never a NaN that JSON refuses
    donor = pq.read_table(dataset.path / "items.parquet", columns=["category", "brand", "attributes"]).slice(0, 1).to_pylist()[0]
    new = {"item_id": f"demo-new-{int(time.time())}", "title": "Aurora Silk Night Cream", "category": donor["category"],
           "brand": donor["brand"], "attributes": donor["attributes"] or []}
    added = http.post(base + "/items", json=new, timeout=30)
    print(f"POST {base}/items {new['item_id']} {new['title']!r} → {added.status_code} {added.json()}")
    added.raise_for_status()
    for body in ({"query": "silk night cream", "k": 3}, {"query": "night cream", "user_id": user, "k": 3}):
        found = http.post(base + "/search", json=body, timeout=30)
        found.raise_for_status()
        hits = found.json()
        print(f"POST {base}/search {json.dumps(body)} → {found.status_code} ({hits['mode']})")
        for h in hits["items"]:
            print(f"  {h['item_id']:>24}  {h['score']:.3f}  {h.get('title')!r}  signals {h['signals']}")  # fields that are null are left out
