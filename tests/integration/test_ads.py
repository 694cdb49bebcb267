"""The ads path end to end on the tiny shop: the ads stage (world, pCTR fine-tuning on the one loop,
calibration; run by the `served` fixture) and `/ads` served beside the recommender, with clicks
charged through `/events`."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest
import requests

DAY_MS = 1_924_992_000_000  # 2031-01-01T00:00Z: the requests' context time (hour and weekday features)


@pytest.fixture(scope="module")
def ads_export(served):
    from recsys.artifacts import ArtifactStore

    return ArtifactStore.of(served.cfg).latest("ads")


def _world(ads_export):
    from recsys.ads.world import AdWorld

    return AdWorld(ads_export.meta.extra["ad_world"])


def _engine(ads_export, served):
    from recsys.online.ads import AdEngine

    return AdEngine(ads_export.path, _world(ads_export), served.cfg.ads)


def test_ads_stage_publishes_a_calibrated_pctr_model_over_a_reproducible_world(ads_export, tiny_run, tmp_path):
    from recsys.ads.report import pctr_quality
    from recsys.ads.world import AdWorld, _draw

    assert ads_export.stage == "ads" and ads_export.meta.selected_by == "valid_auc"
    assert ads_export.meta.init_from == str(tiny_run.finetuned.model_path)  # fine-tuned from the retrieval model
    assert ads_export.meta.extra["calibration"]["method"] == "isotonic"
    world = _world(ads_export)
    assert set(world.impressions("train")["day"]) == {0} and set(world.impressions("test")["day"]) == {2}
    held_out = pctr_quality(ads_export, world, tiny_run.cfg.ads, tiny_run.cfg.data.max_seq_len, "test")
    assert held_out["ece_after"] < held_out["ece_before"], held_out  # fitted on valid, better on the test day
    assert held_out["impressions"] > 500
    again = tmp_path / "again"
    again.mkdir()
    _draw(tiny_run.cfg.ads.world, tiny_run.dataset, again)  # same config and seed → same world
    pd.testing.assert_frame_equal(AdWorld(again).campaigns, world.campaigns)
    assert AdWorld(again).impressions("valid")["label"].tolist() == world.impressions("valid")["label"].tolist()


def _id_of(tiny_run) -> dict:
    items = tiny_run.dataset.items()
    return dict(zip(items["item_index"], items["item_id"], strict=True))


def test_served_ads_equal_the_offline_auction_for_the_same_history(served, ads_export, tiny_run):
    """Parity: /ads for a history (item_ids, no user: no frequency cap) gives the campaigns, pCTRs and
    prices the library's engine and auction give on a fresh ledger (no spend yet, pacing wide open)."""
    from recsys.online.ads import fill_slots

    engine, world, id_of = _engine(ads_export, served), _world(ads_export), _id_of(tiny_run)
    compared = 0
    for u in range(8):
        history = [int(i) for i in world.users["history"].iat[u]][-10:]
        ts = DAY_MS + (9 + u) * 3_600_000
        answer = requests.post(served.base + "/ads", json={"item_ids": [id_of[i] for i in history], "slots": [0, 1, 2],
                                                           "context": {"timestamp": ts}}, timeout=30)
        assert answer.status_code == 200, answer.text
        hour = 9 + u
        scored = engine.score([history], [hour], [2], 3)  # 2031-01-01 is a Wednesday
        present = scored.campaigns[0] >= 0
        offline = fill_slots(engine.ledger(), engine.bids, engine.cfg, "", scored.campaigns[0, present], scored.pctr[0, present],
                             scored.relevance[0, present], hour * 3600.0, [0, 1, 2], np.random.default_rng(0))
        served_ads = answer.json()["ads"]
        assert [a["campaign_id"] for a in served_ads] == [engine.campaigns["campaign_id"].iat[o.campaign] for o in offline]
        assert [a["price_per_click"] for a in served_ads] == pytest.approx([o.price for o in offline], abs=1e-6)
        assert [a["pctr"] for a in served_ads] == pytest.approx([o.pctr for o in offline], abs=1e-5)
        compared += len(offline)
    assert compared > 0


def test_served_ads_are_priced_and_a_click_is_charged_once(served, ads_export):
    world = _world(ads_export)
    user = str(world.users["user_id"].iat[0])
    ts = DAY_MS + 20 * 3_600_000
    answer = requests.post(served.base + "/ads", json={"user_id": user, "slots": [0, 1], "context": {"timestamp": ts}}, timeout=30)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert 1 <= len(body["ads"]) <= 2 and body["model_version"] == ads_export.version
    bids = dict(zip(world.campaigns["campaign_id"], world.campaigns["bid"], strict=True))
    for ad in body["ads"]:
        assert 0 < ad["pctr"] < 1 and served.cfg.ads.auction.reserve_cpc <= ad["price_per_click"] <= bids[ad["campaign_id"]]
        assert ad["ecpm"] == pytest.approx(ad["pctr"] * bids[ad["campaign_id"]] * 1000, rel=1e-3)
    ad = body["ads"][0]
    before = requests.get(f"{served.base}/campaigns/{ad['campaign_id']}", timeout=30).json()
    # the click event under a user id no other test reads: a click joins its user's live history, and the
    # recommendation and search tests compare served scores with the logged histories of the shop's users
    click = {"user_id": "ads-clicker-0", "item_id": ad["item_id"], "event": "click", "impression_id": ad["impression_id"],
             "timestamp": ts + 5000}
    first = requests.post(served.base + "/events", json=click, timeout=30).json()
    repeat = requests.post(served.base + "/events", json=click, timeout=30).json()
    assert first["charged"] == pytest.approx(min(ad["price_per_click"], before["remaining"])) and first["duplicate"] is False
    assert repeat["charged"] == 0 and repeat["duplicate"] is True  # the same click delivered twice is charged once
    after = requests.get(f"{served.base}/campaigns/{ad['campaign_id']}", timeout=30).json()
    assert after["clicks"] == before["clicks"] + 1 and after["spent"] == pytest.approx(before["spent"] + first["charged"])


def test_concurrent_clicks_never_overspend_a_budget_and_each_is_charged_once(served, ads_export):
    """Many impressions, then every click sent twice from 16 threads at once: per campaign, spend
    stays within the daily budget and equals what the first deliveries were charged."""
    world = _world(ads_export)
    impressions = []
    for u in range(40):
        user = str(world.users["user_id"].iat[u % len(world.users)])
        ads = requests.post(served.base + "/ads", json={"user_id": user, "slots": [0, 1, 2]}, timeout=30).json()["ads"]
        impressions += [(user, a) for a in ads]
    assert len(impressions) > 20
    touched = sorted({a["campaign_id"] for _, a in impressions})
    before = {c: requests.get(f"{served.base}/campaigns/{c}", timeout=30).json()["spent"] for c in touched}

    def click(pair):  # under a user id of its own (see test_served_ads_are_priced_and_a_click_is_charged_once)
        _, ad = pair
        return requests.post(served.base + "/events", json={"user_id": "ads-clicker-1", "item_id": ad["item_id"], "event": "click",
                                                           "impression_id": ad["impression_id"]}, timeout=60).json()

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(click, impressions * 2))
    charged: dict = {}
    for (_, ad), answer in zip(impressions * 2, answers, strict=True):
        charged[ad["campaign_id"]] = charged.get(ad["campaign_id"], 0.0) + answer["charged"]
    assert sum(a["duplicate"] for a in answers) == len(impressions)  # one of each pair was the repeat
    for c in touched:
        state = requests.get(f"{served.base}/campaigns/{c}", timeout=30).json()
        assert state["spent"] <= state["daily_budget"] + 1e-9, state
        assert state["spent"] == pytest.approx(before[c] + charged[c], abs=1e-6)


@pytest.mark.parametrize(("body", "field"), [
    ({"slots": []}, "slots"),
    ({"slots": [0, 0]}, "slots"),
    ({"slots": [9]}, "slots"),
    ({"slots": [0], "context": {"timestamp": float("nan")}}, "timestamp"),
    ({"slots": [0], "context": {"timestamp": "noon"}}, "timestamp"),
    ({"slots": [0], "item_ids": ["no-such-item"], "user_id": None}, "item_ids"),
])
def test_bad_ads_requests_answer_422_naming_the_field(served, ads_export, body, field):
    body = {"user_id": str(_world(ads_export).users["user_id"].iat[1]), **body}
    answer = requests.post(served.base + "/ads", data=json.dumps({k: v for k, v in body.items() if v is not None}),
                           headers={"content-type": "application/json"}, timeout=30)
    assert answer.status_code == 422, answer.text
    assert [d["field"].rsplit(".", 1)[-1] for d in answer.json()["detail"]] == [field], answer.text


def test_a_click_on_an_impression_never_served_is_refused_and_charges_nothing(served, ads_export):
    world = _world(ads_export)
    user, item, campaign = str(world.users["user_id"].iat[2]), world.campaigns["item_id"].iat[0], world.campaigns["campaign_id"].iat[0]
    before = requests.get(f"{served.base}/campaigns/{campaign}", timeout=30).json()["spent"]
    for impression in ("2031-01-01." + "0" * 32, "not-an-id", "../../etc/passwd"):
        answer = requests.post(served.base + "/events", json={"user_id": user, "item_id": item, "event": "click",
                                                             "impression_id": impression}, timeout=30)
        assert answer.status_code == 422 and answer.json()["detail"][0]["field"] == "impression_id", answer.text
    view = requests.post(served.base + "/events", json={"user_id": user, "item_id": item, "event": "view", "impression_id": "x"}, timeout=30)
    assert view.status_code == 422 and view.json()["detail"][0]["field"] == "impression_id", view.text
    assert requests.get(f"{served.base}/campaigns/{campaign}", timeout=30).json()["spent"] == before
    assert requests.get(f"{served.base}/campaigns/no-such-campaign", timeout=30).status_code == 404


def test_served_ads_are_targeting_eligible_for_the_history_sent(served, ads_export, tiny_run):
    """Every ad /ads shows for a history (item_ids, no user) passes the engine's targeting of that
    history at that hour; the engine's targeting is the world's."""
    engine, world, id_of = _engine(ads_export, served), _world(ads_export), _id_of(tiny_run)
    targeted = ~engine.untargeted
    allowed = engine.eligible([list(h) for h in world.users["history"].head(30)], np.full(30, 12))
    assert (allowed[:, targeted] == (world.eligible[:30] & world.hour_allowed(np.full(30, 12)))[:, targeted]).all()
    shown = 0
    for u in range(12):
        history = [int(i) for i in world.users["history"].iat[u]][-10:]
        body = {"item_ids": [id_of[i] for i in history], "slots": [0, 1, 2], "context": {"timestamp": DAY_MS + 12 * 3_600_000}}
        answer = requests.post(served.base + "/ads", json=body, timeout=30)
        assert answer.status_code == 200, answer.text
        ok = engine.eligible([history], [12])[0]
        for ad in answer.json()["ads"]:
            shown += 1
            assert ok[engine.index_of[ad["campaign_id"]]], (ad, history)
    assert shown > 0


def test_an_advertiser_changes_bid_and_budget_and_bad_values_name_the_field(served, ads_export):
    campaign = _world(ads_export).campaigns["campaign_id"].iat[3]
    for body, field in (({"bid": 0}, "bid"), ({"daily_budget": -5}, "daily_budget"), ({"bid": "high"}, "bid"), ({}, "daily_budget")):
        answer = requests.put(f"{served.base}/campaigns/{campaign}", json=body, timeout=30)
        assert answer.status_code == 422 and [d["field"] for d in answer.json()["detail"]] == [field], answer.text
    assert requests.put(f"{served.base}/campaigns/no-such-campaign", json={"bid": 1.0}, timeout=30).status_code == 404
    changed = requests.put(f"{served.base}/campaigns/{campaign}", json={"bid": 2.5, "daily_budget": 40.0}, timeout=30).json()
    assert changed["bid"] == 2.5 and changed["daily_budget"] == 40.0
    assert requests.get(f"{served.base}/campaigns/{campaign}", timeout=30).json()["bid"] == 2.5
