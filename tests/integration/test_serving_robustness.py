"""Serving under stress: overload (503), timeouts (408), body limit (413), a fuzz of malformed
requests (never a 5xx, replica alive), the model swap under load with zero failures, metrics."""

import json
import random
import shutil
import threading
import time
from collections import Counter

import pytest
import requests

pytestmark = pytest.mark.integration


def test_body_over_the_limit_is_413_json(served):
    big = {"user_id": "u", "item_ids": ["x" * 200] * 400}  # ~80 kB > serve.max_body_bytes 65,536
    answer = requests.post(served.base + "/recommend", json=big, timeout=30)
    assert answer.status_code == 413 and answer.json()["error"] == "payload_too_large"
    chunked = requests.post(served.base + "/recommend", data=(b"x" * 8192 for _ in range(12)),
                            headers={"content-type": "application/json"}, timeout=30)  # no Content-Length
    assert chunked.status_code == 413


def test_request_past_its_timeout_answers_408(served):
    answer = requests.post(served.base + "/recommend", json={"user_id": "u", "k": 5},
                           headers={"x-request-timeout-seconds": "0.00001"}, timeout=30)
    assert answer.status_code == 408
    assert requests.post(served.base + "/recommend", json={"user_id": "u", "k": 5}, timeout=30).status_code == 200


def _fuzz_cases(seed: int, n: int) -> list[tuple[str, str, bytes, dict]]:
    rng = random.Random(seed)
    junk = [None, True, -1, 0, 10**40, -(10**40), 1.5, "NaN", "", "x" * 5000, [], {}, [None], {"a": [1, {"b": []}]}, "ü\u0000\ud800"]
    fields = {"/recommend": ["user_id", "item_ids", "k", "filters", "timestamp", "explain"],
              "/rank": ["user_id", "item_ids", "candidates", "timestamp", "explain"],
              "/events": ["user_id", "item_id", "event", "timestamp"],
              "/search": ["query", "user_id", "item_ids", "k", "filters", "mode"],
              "/items": ["item_id", "title", "category", "brand", "price", "attributes"],
              "/ads": ["user_id", "item_ids", "slots", "context"]}
    raw = [b"", b"{", b"[", b"null", b"42", b'"s"', b"{\"user_id\": NaN}", b"{\"k\": Infinity, \"user_id\": \"u\"}",
           b"\xff\xfe\x00", b"{\"user_id\": \"u\", \"k\": 1e309}", b"{" * 500 + b"}" * 500]
    cases = []
    for i in range(n):
        path = rng.choice(list(fields))
        kind = i % 4
        if kind == 0:
            body = raw[rng.randrange(len(raw))]
        else:
            obj = {f: rng.choice(junk) for f in rng.sample(fields[path], rng.randint(1, len(fields[path])))}
            if kind == 2 and path == "/ads":
                obj["context"] = {rng.choice(["timestamp", "hour", "zzz"]): rng.choice(junk)}
            elif kind == 2:
                obj["filters"] = {rng.choice(["categories", "brands", "price_min", "price_max", "exclude_purchased", "zzz"]): rng.choice(junk)}
            if kind == 3:
                obj[rng.choice(["extra", "K", "user id"])] = rng.choice(junk)
            body = json.dumps(obj).encode()
        ctype = rng.choice(["application/json", "application/json", "text/plain", "application/x-www-form-urlencoded"])
        cases.append(("POST", path, body, {"content-type": ctype}))
    for i in range(n // 10):
        cases.append(("GET", rng.choice(["/items/" + "%00" * (i % 5 + 1), "/items/" + "z" * 3000, "/items/%ff%fe", "/recommend", "/nope",
                                         "/campaigns/" + "%00" * (i % 3 + 1), "/campaigns/" + "c" * 3000]), b"", {}))
    for _ in range(n // 10):  # advertisers' changes: junk bids and budgets
        body = json.dumps({rng.choice(["bid", "daily_budget", "zzz"]): rng.choice(junk)}).encode()
        cases.append(("PUT", rng.choice(["/campaigns/cmp-00000", "/campaigns/nope"]), body, {"content-type": "application/json"}))
    return cases


def test_fuzz_of_malformed_requests_never_5xx_and_replica_survives(served):
    from ray import serve

    cases = _fuzz_cases(seed=7, n=240)
    statuses = Counter()
    for method, path, body, headers in cases:
        answer = requests.request(method, served.base + path, data=body, headers=headers, timeout=30)
        statuses[answer.status_code] += 1
        assert answer.status_code < 500, (path, body[:200], answer.status_code, answer.text[:300])
        if answer.status_code != 200:
            assert answer.json()["error"], answer.text  # every error is JSON with a kind
    print(f"fuzz: {len(cases)} requests → {dict(statuses)}")
    assert len(cases) >= 200 and sum(statuses.values()) == len(cases)
    assert requests.get(served.base + "/readyz", timeout=10).status_code == 200
    app = serve.status().applications["recommender"]
    assert app.status == "RUNNING"
    assert all(d.status == "HEALTHY" for d in app.deployments.values())


class _Load:
    """Closed-loop clients in threads; records every answer's status and served version."""

    def __init__(self, url: str, bodies: list[dict], clients: int):
        self.url, self.bodies, self.stop = url, bodies, threading.Event()
        self.statuses: Counter = Counter()
        self.versions: Counter = Counter()
        self.failures: list = []
        self.threads = [threading.Thread(target=self._run, args=(c,), daemon=True) for c in range(clients)]

    def _run(self, c: int) -> None:
        session = requests.Session()
        i = c
        while not self.stop.is_set():
            body = self.bodies[i % len(self.bodies)]
            i += 7
            try:
                answer = session.post(self.url, json=body, timeout=30)
                self.statuses[answer.status_code] += 1
                if answer.status_code == 200:
                    self.versions[answer.json()["version"]] += 1
                else:
                    self.failures.append((answer.status_code, answer.text[:200]))
            except requests.RequestException as exc:
                self.failures.append(repr(exc))

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)


def _deploy(served, index_version: str | None, extra_apps: list[dict] | None = None) -> None:
    """Redeploy the Serve config the way a RayService update does (declarative, in place)."""
    from serving.deploy import deploy_config
    from serving.serve_config import serve_config

    config = serve_config(served.cfg, str(served.config_path), index_version)
    config["applications"] += extra_apps or []
    deploy_config(config, blocking=False)


def _wait_version(served, version: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if requests.get(served.base + "/healthz", timeout=10).json()["version"] == version:
            return
        time.sleep(0.2)
    raise TimeoutError(f"the app did not switch to {version}")


def test_model_swap_under_load_fails_no_request(served, tiny_run):
    """Swap to another model version and back while 4 clients keep asking: every answer is 200,
    and answers came from both versions (the load spanned both swaps)."""
    users = tiny_run.dataset.read_split("test")["user_id"].head(40).astype(str).tolist()
    bodies = [{"user_id": u, "k": 10} for u in users] + [{"user_id": "cold-" + u, "k": 5} for u in users[:5]]
    replica = requests.get(served.base + "/healthz", timeout=10).json()["replica"]
    with _Load(served.base + "/recommend", bodies, clients=4) as load:
        time.sleep(1.0)
        _deploy(served, served.other.version)
        _wait_version(served, served.other.version)
        time.sleep(1.0)
        _deploy(served, served.current.version)
        _wait_version(served, served.current.version)
        time.sleep(1.0)
    print(f"swap under load: {dict(load.statuses)} answers, versions {dict(load.versions)}")
    assert not load.failures, load.failures[:5]
    assert requests.get(served.base + "/healthz", timeout=10).json()["replica"] == replica  # in place, not a restart
    assert load.versions[served.other.version] > 0 and load.versions[served.current.version] > 0
    assert sum(load.statuses.values()) > 50


def test_swap_to_a_version_failing_its_checks_keeps_serving_the_old_one(served, tmp_path):
    """A version whose index is corrupt is refused: the replica keeps the current version and says why."""
    broken = served.current.path.parent / "broken-version"
    if not broken.exists():
        shutil.copytree(served.current.path, broken)
        manifest = json.loads((broken / "manifest.json").read_text()) | {"version": "broken-version"}
        (broken / "manifest.json").write_text(json.dumps(manifest))
        (broken / "items.faiss").write_bytes(b"not an index")
    _deploy(served, "broken-version")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not requests.get(served.base + "/healthz", timeout=10).json()["swap_error"]:
        time.sleep(0.2)
    health = requests.get(served.base + "/healthz", timeout=10).json()
    assert health["version"] == served.current.version and "broken-version" in health["swap_error"]
    assert requests.post(served.base + "/recommend", json={"user_id": "u", "k": 3}, timeout=30).status_code == 200
    _deploy(served, served.current.version)


def test_overload_answers_503_and_recovers_with_redis_events(served, tiny_run, redis_url):
    """A second app: one request at a time, one queued, a slow batch window, events in Redis.
    24 simultaneous clients: the excess gets 503 at once, nothing else fails, and afterwards
    the app answers normally (its events round-trip through Redis)."""
    from recsys.config import load_config
    from serving.serve_config import application

    overrides = ["serve.max_ongoing_requests=1", "serve.max_queued_requests=1", "serve.batching.batch_wait_timeout_s=0.3",
                 "serve.batching.max_batch_size=8", "serve.events.backend=redis", f"serve.events.redis_url={redis_url}"]
    overload = application(load_config(served.config_path, overrides), str(served.config_path), "overload", "/overload", overrides=overrides)
    _deploy(served, served.current.version, [overload])
    url = served.base + "/overload"
    served.wait_ready("/overload/readyz")
    user = str(tiny_run.dataset.read_split("test")["user_id"].iloc[0])
    results: list = []

    def one():
        try:
            results.append(requests.post(url + "/recommend", json={"user_id": user, "k": 5}, timeout=60).status_code)
        except requests.RequestException as exc:
            results.append(repr(exc))

    threads = [threading.Thread(target=one) for _ in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    counts = Counter(results)
    print(f"overload: {dict(counts)}")
    assert counts[503] > 0 and counts[200] > 0 and set(counts) <= {200, 503}, counts
    item = tiny_run.dataset.items()["item_id"].iloc[5]
    assert requests.post(url + "/events", json={"user_id": "redis-user", "item_id": item, "event": "click"}, timeout=30).json()["recent_events"] == 1
    import redis

    assert redis.Redis.from_url(redis_url).llen("recsys:events:redis-user") == 1
    after = requests.post(url + "/recommend", json={"user_id": "redis-user", "k": 5}, timeout=30).json()
    assert after["cold_start"] is False and item not in [i["item_id"] for i in after["items"]]
    _deploy(served, served.current.version)  # the config without it removes the overload app


def test_serving_metrics_reach_prometheus(served):
    """The replica's Ray metrics appear on the node's Prometheus endpoint (what the dashboard and Grafana read)."""
    import ray

    port = ray._private.worker.global_worker.node.metrics_export_port
    for _ in range(5):
        requests.post(served.base + "/recommend", json={"user_id": "metrics-user", "k": 3}, timeout=30)
    wanted = ["recsys_serve_requests_total", "recsys_serve_latency_ms_bucket", "recsys_serve_stage_ms_bucket",
              "recsys_serve_batch_size_bucket", "recsys_serve_version_info"]
    deadline = time.monotonic() + 90
    text = ""
    while time.monotonic() < deadline and not all(w in text for w in wanted):
        time.sleep(2)
        try:
            text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        except requests.RequestException:
            text = ""
    assert all(w in text for w in wanted), [w for w in wanted if w not in text]
    assert 'route="/recommend"' in text and 'stage="ann"' in text


def test_killing_one_of_two_replicas_under_load_fails_no_request_after_one_retry(served, tiny_run):
    """A second app with two replicas; four clients that retry once on a connection error or 502/503/504
    (benchmarks.loadgen, what a real client does); one replica's process is killed mid-load.
    Every request is answered after at most one retry, and Serve brings a replacement up."""
    import asyncio

    import ray

    from benchmarks.loadgen import run_load
    from recsys.config import load_config
    from serving.serve_config import DEPLOYMENT, application

    overrides = ["serve.num_replicas=2"]
    pair = application(load_config(served.config_path, overrides), str(served.config_path), "pair", "/pair", overrides=overrides)
    _deploy(served, served.current.version, [pair])
    served.wait_ready("/pair/readyz")
    try:
        _wait_replicas("pair", 2, 120)
        replicas: set = set()
        for _ in range(200):
            replicas.add(requests.get(served.base + "/pair/healthz", timeout=10).json()["replica"])
            if len(replicas) == 2:
                break
        assert len(replicas) == 2, replicas
        users = tiny_run.dataset.read_split("test")["user_id"].head(40).astype(str).tolist()
        bodies = [json.dumps({"user_id": u, "k": 10}).encode() for u in users]
        result: dict = {}
        load = threading.Thread(target=lambda: result.update(asyncio.run(run_load(served.base + "/pair/recommend", bodies, 4, 12.0, 0.0, retry=True))))
        load.start()
        time.sleep(3.0)
        victim = sorted(replicas)[0]
        ray.kill(ray.get_actor(f"SERVE_REPLICA::pair#{DEPLOYMENT}#{victim}", namespace="serve"), no_restart=True)
        load.join(timeout=120)
        print(f"replica kill: {result['requests']} requests, {result['retried']} retried {result['retried_on']}, "
              f"{result['failed_after_retry']} failed after retry, longest gap without 2xx {result['longest_gap_without_2xx_s']} s, "
              f"statuses {result['statuses']}")
        assert result["requests"] > 50 and result["failed_after_retry"] == 0, result
        deadline, seen = time.monotonic() + 120, set()
        while time.monotonic() < deadline and not (seen - replicas):
            seen.add(requests.get(served.base + "/pair/healthz", timeout=10).json()["replica"])
            time.sleep(0.1)
        assert seen - replicas, "Serve did not replace the killed replica"
    finally:
        _deploy(served, served.current.version)  # the config without it removes the pair app
        _wait_gone("pair", 120)  # its CPUs are free before the next test deploys


def _wait_gone(app: str, timeout_s: float) -> None:
    from ray import serve

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and app in serve.status().applications:
        time.sleep(0.25)


def _running_replicas(app: str) -> int:
    from ray import serve

    from serving.serve_config import DEPLOYMENT

    status = serve.status().applications.get(app)
    if status is None or DEPLOYMENT not in status.deployments:
        return 0
    return status.deployments[DEPLOYMENT].replica_states.get("RUNNING", 0)


def _wait_replicas(app: str, n: int, timeout_s: float) -> float:
    """Seconds until Serve's status API reports `n` running replicas of `app`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if _running_replicas(app) == n:
            return time.monotonic() - started
        time.sleep(0.25)
    raise TimeoutError(f"{app} did not reach {n} running replicas in {timeout_s:.0f}s (now {_running_replicas(app)})")


def test_autoscaling_grows_under_load_and_shrinks_when_it_stops(served, tiny_run):
    """Autoscaling watched through Serve's status API: 1 replica idle, 2 under 6 clients
    (target one ongoing request per replica), back to 1 after the load stops; times printed."""
    from recsys.config import load_config
    from serving.serve_config import application

    overrides = ["serve.autoscaling={min_replicas: 1, max_replicas: 2, target_ongoing_requests: 1, upscale_delay_s: 1, "
                 "downscale_delay_s: 3, look_back_period_s: 11}"]
    scaled = application(load_config(served.config_path, overrides), str(served.config_path), "scaled", "/scaled", overrides=overrides)
    _deploy(served, served.current.version, [scaled])
    served.wait_ready("/scaled/readyz")
    try:
        _wait_replicas("scaled", 1, 60)
        users = tiny_run.dataset.read_split("test")["user_id"].head(40).astype(str).tolist()
        with _Load(served.base + "/scaled/recommend", [{"user_id": u, "k": 10} for u in users], clients=6) as load:
            grew_s = _wait_replicas("scaled", 2, 90)
        shrank_s = _wait_replicas("scaled", 1, 120)
        print(f"autoscaling: 1 → 2 replicas {grew_s:.1f} s into the load, 2 → 1 {shrank_s:.1f} s after it stopped; {dict(load.statuses)}")
        assert not load.failures, load.failures[:5]
    finally:
        _deploy(served, served.current.version)
        _wait_gone("scaled", 120)
