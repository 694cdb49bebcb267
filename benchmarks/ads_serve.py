"""The served half of benchmarks/ads.py, in its own process (a fresh Ray and Serve app):

- latency: POST /ads (three slots) and POST /recommend (k 10) for the same users on the same
  replica, one client and 16, closed loop (benchmarks/loadgen.py, a separate process);
- replay: every n-th page view of the ad world's traffic day (`replay_requests` of them), in time order, through
  POST /ads with the day's simulated clock (context.timestamp), each ad clicked when the world's
  true click model says so (the offline replay's common random numbers) through POST /events with
  its impression id, each click sent twice (a repeat must charge nothing); the same page views
  through the offline engine, for the agreement of the two. The served clicks also join the users'
  live histories (as in production), which the offline replay's fixed histories do not.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OVERRIDES = ["ads.enabled=true", "ads.clock=request"]  # the replayed day runs on its own simulated clock


def replay_date_ms(ledger_folder: Path, weekday: int) -> int:
    """Midnight (UTC, ms) of the first date from 2031 on with the world's traffic weekday and no
    ledger log yet: every run replays a day no earlier run has spent budget on."""
    from datetime import UTC, datetime, timedelta

    day = datetime(2031, 1, 6, tzinfo=UTC) + timedelta(days=weekday)  # 2031-01-06 is a Monday
    while (ledger_folder / f"{day:%Y-%m-%d}.log").is_file():
        day += timedelta(days=7)
    return int(day.timestamp() * 1000)


def served_figures(config: str, seconds: float, overrides: list[str], replay_requests: int = 2000) -> dict:
    out = REPO / "benchmarks" / "results" / ".ads-served.json"
    subprocess.run([sys.executable, "-m", "benchmarks.ads_serve", config, str(seconds), str(replay_requests), *overrides],
                   cwd=REPO, check=True)
    result = json.loads(out.read_text())
    out.unlink()
    return result


def _replay_served(base: str, world, traffic, draws, day_ms: int) -> dict:
    import requests

    users = world.users["user_id"].to_numpy()
    truth = world.truth
    index = {cid: i for i, cid in enumerate(world.campaigns["campaign_id"])}
    revenue, clicks, shown, duplicates = 0.0, 0, 0, 0
    session = requests.Session()
    for r, row in enumerate(traffic.itertuples()):
        ts = day_ms + int(row.second) * 1000
        answer = session.post(base + "/ads", json={"user_id": str(users[row.user]), "slots": list(range(draws.shape[1])),
                                                  "context": {"timestamp": ts}}, timeout=30)
        answer.raise_for_status()
        for ad in answer.json()["ads"]:
            shown += 1
            if draws[r, ad["slot"]] < float(truth.probability(row.user, index[ad["campaign_id"]], ad["slot"], row.hour)):
                click = {"user_id": str(users[row.user]), "item_id": ad["item_id"], "event": "click", "timestamp": ts + 5000,
                         "impression_id": ad["impression_id"]}
                charged = session.post(base + "/events", json=click, timeout=30).json()
                again = session.post(base + "/events", json=click, timeout=30).json()  # the click event delivered twice
                revenue += charged["charged"]
                duplicates += again["charged"] > 0
                clicks += 1
    return {"requests": len(traffic), "impressions": shown, "clicks": clicks, "revenue": round(revenue, 2),
            "repeat_clicks_charged": int(duplicates)}


def child(config: str, seconds: float, replay_requests: int, overrides: list[str]) -> None:
    import ray
    from ray import serve

    from benchmarks.loadgen import load_levels
    from benchmarks.serving import start_app
    from recsys.ads.simulate import replay_day, score_traffic
    from recsys.ads.world import AdWorld
    from recsys.artifacts import ArtifactStore
    from recsys.online.ads import AdEngine

    cfg, release, base = start_app(config, [*OVERRIDES, *overrides])
    try:
        export = ArtifactStore.of(cfg).latest("ads")
        engine = AdEngine(export.path, AdWorld(export.meta.extra["ad_world"]), cfg.ads)
        world, slots = engine.world, cfg.ads.world.slots
        users = world.users["user_id"].to_numpy()[world.traffic()["user"].to_numpy()[:400]]
        bodies = RESULTS / ".ads-bodies.json"
        bodies.write_text(json.dumps([{"user_id": str(u), "slots": list(range(slots))} for u in users]))
        rec = RESULTS / ".rec-bodies.json"
        rec.write_text(json.dumps([{"user_id": str(u), "k": 10} for u in users]))
        print("POST /ads:", flush=True)
        ads = load_levels(base + "/ads", bodies, seconds, [1, 16], cwd=REPO)
        print("POST /recommend, same users, same replica:", flush=True)
        recommend = load_levels(base + "/recommend", rec, seconds, [1, 16], cwd=REPO)
        bodies.unlink()
        rec.unlink()
        day = world.traffic()
        step = max(1, len(day) // replay_requests)  # every step-th page view: the whole day's clock, budgets and all
        traffic = day.iloc[::step].reset_index(drop=True)
        draws = np.random.default_rng([0, 2]).random((len(day), slots))[::step]
        from recsys.online.engine import EngineSpec

        day_ms = replay_date_ms(Path(EngineSpec.of(cfg).ads_ledger_folder) / world.version, int(traffic["weekday"].iat[0]))
        served = _replay_served(base, world, traffic, draws, day_ms)
        offline = replay_day(engine, traffic, score_traffic(engine, traffic, slots), "ecpm", cfg.ads.pacing.enabled, slots, draws=draws)
        result = {
            "latency": {"ads": ads, "recommend": recommend,
                        "p50_ratio": round(ads["c1"]["p50_ms"] / recommend["c1"]["p50_ms"], 3),
                        "qps_ratio_c16": round(ads["c16"]["qps"] / recommend["c16"]["qps"], 3)},
            "replay": {"policy": "ecpm" + ("_paced" if cfg.ads.pacing.enabled else "_gsp"), "date_ms": day_ms, "served": served,
                       "offline_same_requests": {k: offline[k] for k in ("revenue", "clicks", "impressions")},
                       "revenue_ratio_served_to_offline": round(served["revenue"] / max(offline["revenue"], 1e-9), 3)},
        }
        (RESULTS / ".ads-served.json").write_text(json.dumps(result))
    finally:
        serve.shutdown()
        ray.shutdown()


RESULTS = REPO / "benchmarks" / "results"

if __name__ == "__main__":
    child(sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4:])
