"""Ray metrics of the serving path (exported to the Ray dashboard and Prometheus on :8080/metrics
of each node; Grafana reads them there). Names start with `recsys_serve_`."""

from __future__ import annotations

from ray.util.metrics import Counter, Gauge, Histogram

LATENCY_MS = [0.5, 1, 2, 5, 10, 15, 20, 30, 50, 100, 200, 500, 1000, 5000]


class ServingMetrics:
    def __init__(self):
        self.requests = Counter("recsys_serve_requests", "HTTP requests answered, by route and status", tag_keys=("route", "status"))
        self.latency = Histogram("recsys_serve_latency_ms", "HTTP request latency inside the replica", boundaries=LATENCY_MS, tag_keys=("route",))
        self.stage = Histogram(
            "recsys_serve_stage_ms", "time per scoring stage (encode, ann, rank, query_encode, search) per batch", boundaries=LATENCY_MS, tag_keys=("stage",)
        )
        self.batch_size = Histogram("recsys_serve_batch_size", "requests scored together by @serve.batch", boundaries=[1, 2, 4, 8, 16, 32, 64])
        self.version = Gauge("recsys_serve_version_info", "1 for the version this replica serves", tag_keys=("version", "model_version"))
        self.cold_start = Counter("recsys_serve_cold_start", "recommendations answered from popularity (unknown users)")
        self.ad_auctions = Counter("recsys_ads_auctions", "ad auctions run (POST /ads)")
        self.ad_slots = Counter("recsys_ads_slots", "ad slots asked for, by outcome (fill rate = filled / all)", tag_keys=("outcome",))
        self.ad_spend = Counter("recsys_ads_spend", "money charged for ad clicks (POST /events with an impression_id)")
        self.ad_pctr = Histogram("recsys_ads_pctr", "calibrated pCTR of the ads shown", boundaries=[0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5])

    def request(self, route: str, status: int, ms: float) -> None:
        route = route if route.startswith(("/recommend", "/rank", "/search", "/events", "/ads", "/healthz", "/readyz", "/docs", "/openapi")) else (
            "/items/{id}" if route.startswith("/items/") else "/items" if route == "/items" else
            "/campaigns/{id}" if route.startswith("/campaigns/") else "/forecast/{id}" if route.startswith("/forecast/") else "other"
        )
        self.requests.inc(tags={"route": route, "status": str(status)})
        self.latency.observe(ms, tags={"route": route})

    def stages(self, timings: dict) -> None:
        for name, ms in timings.items():
            self.stage.observe(ms, tags={"stage": name.removesuffix("_ms")})

    def serving(self, old: tuple[str, str] | None, new: tuple[str, str]) -> None:
        if old is not None:
            self.version.set(0, tags={"version": old[0], "model_version": old[1]})
        self.version.set(1, tags={"version": new[0], "model_version": new[1]})

    def auction(self, asked: int, slate: list) -> None:
        self.ad_auctions.inc()  # Ray's Counter.inc refuses 0: count only what happened
        if slate:
            self.ad_slots.inc(len(slate), tags={"outcome": "filled"})
        if asked > len(slate):
            self.ad_slots.inc(asked - len(slate), tags={"outcome": "empty"})
        for ad in slate:
            self.ad_pctr.observe(ad["pctr"])
