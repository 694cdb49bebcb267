"""The ad path's pieces without Ray: auction ranking and second prices, the ledger's budget and
idempotent clicks (also across a restart), pacing, calibration and the calibration metrics."""

import numpy as np
import pandas as pd
import pytest

from recsys.ads.auction import run_auction
from recsys.ads.calibration import Calibrator
from recsys.ads.ledger import AdLedger, UnknownImpression
from recsys.ads.pacing import PacingController
from recsys.ads.world import ClickModel, hour_allowed
from recsys.config import AdsConfig, AuctionConfig, PacingConfig
from recsys.eval.metrics import expected_calibration_error, reliability_bins
from recsys.online.ads import AdBook

AUCTION = AuctionConfig(reserve_cpc=0.05, quality_floor=0.001)


def test_ecpm_auction_ranks_by_pctr_times_bid_and_charges_the_next_ecpm_over_own_pctr():
    pctr = np.array([0.02, 0.05, 0.01, 0.04])
    bids = np.array([1.0, 0.3, 3.0, 0.5])  # eCPM 0.02, 0.015, 0.03, 0.02
    r = run_auction(pctr, bids, 3, AUCTION, "ecpm")
    assert r.winners.tolist() == [2, 0, 3]  # ties keep the candidates' order
    # slot 0 pays eCPM of the next (0.02) / its pCTR (0.01) = 2.0; slot 1: 0.02/0.02 = 1.0; slot 2: next is 0.015 → 0.015/0.04
    assert r.prices.tolist() == pytest.approx([2.0, 1.0, 0.375])
    assert np.all(r.prices <= bids[r.winners])


def test_highest_bid_gsp_pays_the_next_bid_and_the_last_winner_pays_the_reserve():
    r = run_auction(np.array([0.01, 0.01]), np.array([0.4, 0.9]), 2, AUCTION, "highest_bid")
    assert r.winners.tolist() == [1, 0]
    assert r.prices.tolist() == pytest.approx([0.4, 0.05])


def test_highest_pctr_pays_the_reserve_and_rounding_never_charges_above_the_bid():
    r = run_auction(np.array([0.03, 0.01]), np.array([0.2, 0.9]), 2, AUCTION, "highest_pctr")
    assert r.winners.tolist() == [0, 1] and r.prices.tolist() == [0.05, 0.05]
    odd = run_auction(np.array([0.02, 0.02]), np.array([0.123456, 0.123455]), 1, AUCTION, "ecpm")
    assert odd.prices[0] <= 0.123456


def test_reserve_and_quality_floor_keep_ads_out_and_first_price_pays_the_bid():
    pctr = np.array([0.0005, 0.02, 0.03])
    bids = np.array([5.0, 0.01, 0.7])  # the first is under the quality floor, the second under the reserve
    r = run_auction(pctr, bids, 3, AUCTION, "ecpm")
    assert r.winners.tolist() == [2] and r.prices.tolist() == [0.05]
    first = run_auction(pctr, bids, 3, AUCTION.model_copy(update={"pricing": "first_price"}), "ecpm")
    assert first.prices.tolist() == [0.7]
    assert len(run_auction(np.zeros(0), np.zeros(0), 2, AUCTION, "ecpm").winners) == 0


def test_organic_blend_can_reorder_close_ecpms():
    pctr, bids, rel = np.array([0.02, 0.021]), np.array([1.0, 1.0]), np.array([5.0, -5.0])
    assert run_auction(pctr, bids, 1, AUCTION, "ecpm", rel).winners.tolist() == [1]
    blended = AUCTION.model_copy(update={"organic_weight": 0.5})
    assert run_auction(pctr, bids, 1, blended, "ecpm", rel).winners.tolist() == [0]


def ledger(tmp_path=None, budgets=(1.0, 10.0), cap=2) -> AdLedger:
    cfg = AdsConfig(auction={"frequency_cap": cap}, pacing={"enabled": False})
    return AdLedger(np.array([0.6, 0.5]), np.array(budgets), np.full(24, 1 / 24), cfg,
                    tmp_path / "day.log" if tmp_path else None)


def test_a_click_is_charged_once_and_an_unknown_impression_is_refused():
    book = ledger()
    book.record("i1", "u", 0, 0.4, 0.02, 0, 10.0)
    assert book.click("i1") == (0.4, True)
    assert book.click("i1") == (0.0, False)  # the same click event again: nothing more
    assert book.spent[0] == pytest.approx(0.4)
    with pytest.raises(UnknownImpression):
        book.click("never-served")
    with pytest.raises(ValueError, match="already served"):
        book.record("i1", "u", 0, 0.4, 0.02, 0, 11.0)


def test_spend_never_exceeds_the_budget_and_an_exhausted_campaign_stops_running():
    book = ledger(budgets=(1.0, 10.0))
    rng = np.random.default_rng(0)
    for i in range(5):  # five impressions served before any click comes back
        book.record(f"i{i}", f"u{i}", 0, 0.4, 0.02, 0, 10.0 + i)
    for i in range(5):
        book.click(f"i{i}")
    assert book.spent[0] == pytest.approx(1.0)  # 0.4 + 0.4 + the 0.2 left; the rest is uncharged
    assert book.uncharged[0] == pytest.approx(5 * 0.4 - 1.0)
    assert book.available("someone", np.array([0, 1]), 100.0, rng).tolist() == [False, True]


def test_anonymous_requests_are_not_frequency_capped_and_leave_nothing_behind():
    book = ledger(cap=1)
    rng = np.random.default_rng(0)
    for i in range(3):
        book.record(f"a{i}", "", 1, 0.1, 0.02, 0, float(i))
    assert book.available("", np.array([1]), 5.0, rng).tolist() == [True]
    assert book.frequency == {}


def test_frequency_cap_per_user_and_campaign():
    book = ledger(cap=2)
    rng = np.random.default_rng(0)
    for i in range(2):
        book.record(f"i{i}", "u", 1, 0.1, 0.02, 0, float(i))
    assert book.available("u", np.array([0, 1]), 5.0, rng).tolist() == [True, False]
    assert book.available("v", np.array([0, 1]), 5.0, rng).tolist() == [True, True]


def test_a_restarted_ledger_resumes_the_days_spend_and_still_charges_a_click_once(tmp_path):
    book = ledger(tmp_path)
    book.record("i1", "u", 0, 0.4, 0.02, 0, 10.0)
    book.record("i2", "u", 1, 0.3, 0.02, 1, 10.0)
    book.click("i1")
    book.close()
    with open(tmp_path / "day.log", "a") as log:
        log.write('["click", "i2"')  # a line torn by a crash mid-write was never acknowledged
    again = ledger(tmp_path)
    assert again.spent.tolist() == pytest.approx([0.4, 0.0])
    assert again.click("i1") == (0.0, False)
    assert again.click("i2") == (0.3, True)
    assert again.frequency[("u", 0)] == 1
    again.record("i3", "v", 1, 0.2, 0.02, 0, 12.0)  # appended after the torn line was cut
    again.close()
    third = ledger(tmp_path)
    assert "i3" in third.impressions and third.spent.tolist() == pytest.approx([0.4, 0.3])
    assert third.click("i2") == (0.0, False)


def test_pacing_spreads_an_eager_campaigns_budget_over_the_day_and_leaves_a_small_spender_alone():
    """Uniform traffic; unthrottled, campaign 0 would spend 36 a day against a budget of 10 and
    campaign 1 would spend 2.4 of 10. Spend follows the pass rate (a deterministic stand-in for the
    auctions), the controller updates every 15 minutes."""
    pacing = PacingController(np.array([10.0, 10.0]), np.full(24, 1 / 24), PacingConfig())  # the shipped gain and lead
    per_interval = np.array([36.0, 2.4]) / 96
    spent = np.zeros(2)
    at_noon = None
    for step in range(96):
        spent = np.minimum(spent + per_interval * pacing.rate, 10.0)
        pacing.update((step + 1) * 900, spent)
        if step == 47:
            at_noon = spent.copy()
    assert spent[0] == pytest.approx(10.0, rel=0.1)  # the whole budget, not all of it by the morning
    assert at_noon[0] == pytest.approx(5.0, rel=0.2)  # about half by noon, as half the traffic
    assert pacing.rate[1] == 1.0 and spent[1] == pytest.approx(2.4)
    assert pacing.target_share(12 * 3600) == pytest.approx(0.5)


def test_pacing_after_a_gap_of_many_intervals_judges_the_whole_gap_at_once():
    """A restart at noon replays half the budget spent: on track, so the rate stays; not crushed
    by counting the morning's spend against the first 15 minutes."""
    pacing = PacingController(np.array([10.0]), np.full(24, 1 / 24), PacingConfig(interval_s=900, gain=0.5))
    pacing.update(12 * 3600, np.array([5.0]))
    assert pacing.rate[0] == pytest.approx(1.0)
    assert pacing.next_update_s == 12 * 3600 + 900
    pacing.update(12 * 3600 + 60, np.array([9.0]))  # within the interval: no update yet
    assert pacing.rate[0] == pytest.approx(1.0)


def test_hour_targeting_wraps_past_midnight_and_equal_hours_mean_all_day():
    campaigns = pd.DataFrame({"hour_start": [20, 8, 0], "hour_end": [8, 20, 0]})
    allowed = hour_allowed(campaigns, [3, 12, 21])
    assert allowed.tolist() == [[True, False, True], [False, True, True], [True, False, True]]


def test_the_true_click_model_falls_with_the_slot_and_rises_with_interest():
    truth = ClickModel(np.array([[0.0, 1.0]]), np.array([0, 1]), np.zeros(2), np.array([1.0, 0.5]), -4.0, 3.0)
    top, lower = truth.probability([0, 0], [1, 1], [0, 1], [12, 12])
    assert lower == pytest.approx(top / 2)
    assert truth.probability([0], [0], [0], [12])[0] < top


def test_calibration_fitted_on_one_half_fixes_overconfident_probabilities_on_the_other_and_round_trips():
    rng = np.random.default_rng(0)
    true_p = rng.uniform(0.005, 0.08, 80_000)
    labels = (rng.random(len(true_p)) < true_p).astype(int)
    raw = np.clip(true_p * 2.5, 0, 1)  # an overconfident model with the right order
    fit, held = slice(0, 40_000), slice(40_000, None)
    for method in ("isotonic", "platt"):
        cal = Calibrator.fit(raw[fit], labels[fit], method)
        assert expected_calibration_error(labels[held], cal(raw[held])) < expected_calibration_error(labels[held], raw[held]) / 5
        again = Calibrator.from_dict(cal.to_dict())
        assert np.allclose(again(raw[:100]), cal(raw[:100]))
    with pytest.raises(ValueError, match="clicks and non-clicks"):
        Calibrator.fit(raw[:10], np.zeros(10), "isotonic")
    with pytest.raises(ValueError, match="isotonic or platt"):
        Calibrator.fit(raw, labels, "beta")


def test_expected_calibration_error_by_hand():
    labels = np.array([0, 0, 1, 1])
    probs = np.array([0.1, 0.1, 0.6, 0.8])  # bins of two: (0.1 vs 0.0), (0.7 vs 1.0)
    assert reliability_bins(labels, probs, 2) == [{"predicted": 0.1, "observed": 0.0, "count": 2},
                                                  {"predicted": pytest.approx(0.7), "observed": 1.0, "count": 2}]
    assert expected_calibration_error(labels, probs, 2) == pytest.approx(0.5 * 0.1 + 0.5 * 0.3)


def test_ad_book_charges_clicks_to_the_day_that_served_them(tmp_path):
    cfg = AdsConfig(pacing={"enabled": False}, clock="request")  # the days below are the requests' own
    book = AdBook(np.array([1.0]), np.array([5.0]), np.full(24, 1 / 24), cfg, tmp_path, seed=0)
    day1 = 1_767_225_600_000  # 2026-01-01T00:00Z
    slate = book.fill("u", [0], [[0.05]], [0.0], day1 + 3_600_000, [0])
    assert slate and slate[0]["impression_id"].startswith("2026-01-01.")
    book.fill("u", [0], [[0.05]], [0.0], day1 + 86_400_000 + 60_000, [0])  # the next day opens its own ledger
    charged, first = book.click(slate[0]["impression_id"])
    assert first and charged == pytest.approx(0.05)  # alone in the auction: it pays the reserve
    assert book.campaign(0, day1)["spent"] == pytest.approx(0.05)
    assert book.campaign(0, day1 + 86_400_000)["spent"] == 0.0
    for day in range(2, 6):  # days further on: the day asked for is always open, the oldest others are closed
        assert book.campaign(0, day1 + day * 86_400_000)["day"] == f"2026-01-0{day + 1}"
    assert len(book.ledgers) == AdBook.KEEP_DAYS
    for bad in ("../../etc/passwd", "2026-01-09.nothing", ""):
        with pytest.raises(UnknownImpression):
            book.click(bad)


def test_an_advertisers_new_bid_and_budget_apply_at_once_and_survive_a_restart(tmp_path):
    cfg = AdsConfig(pacing={"enabled": False}, clock="request")
    book = AdBook(np.array([1.0, 2.0]), np.array([5.0, 5.0]), np.full(24, 1 / 24), cfg, tmp_path, seed=0)
    day1 = 1_767_225_600_000
    book.fill("u", [0], [[0.05]], [0.0], day1, [0])  # today's ledger is open when the change comes
    book.update(1, bid=3.5, daily_budget=0.5)
    assert book.campaign(1, day1)["bid"] == 3.5 and book.campaign(1, day1)["daily_budget"] == 0.5
    with pytest.raises(ValueError, match="bid must be a positive number"):
        book.update(0, bid=0.0)
    with pytest.raises(ValueError, match="daily_budget must be a positive number"):
        book.update(0, daily_budget=float("nan"))
    again = AdBook(np.array([1.0, 2.0]), np.array([5.0, 5.0]), np.full(24, 1 / 24), cfg, tmp_path, seed=0)
    assert again.campaign(1, day1)["bid"] == 3.5 and again.campaign(1, day1)["daily_budget"] == 0.5
    assert again.campaign(0, day1)["bid"] == 1.0


def test_concurrent_clicks_from_many_threads_never_overspend_and_charge_each_impression_once():
    from concurrent.futures import ThreadPoolExecutor

    book = ledger(budgets=(3.0, 10.0))
    ids = [f"i{i}" for i in range(400)]
    for i in ids:
        book.record(i, "u" + i, 0, 0.07, 0.02, 0, 1.0)
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(book.click, ids * 3))  # every click event delivered three times, interleaved
    assert book.spent[0] == pytest.approx(3.0) and book.spent[0] <= book.budgets[0]
    assert sum(first for _, first in results) == len(ids)  # each impression's click counted once
    assert sum(charged for charged, _ in results) == pytest.approx(3.0)


def test_gsp_prices_stay_between_the_reserve_and_the_bid_on_random_auctions():
    rng = np.random.default_rng(3)
    for _ in range(300):
        n = int(rng.integers(1, 12))
        pctr, bids = rng.uniform(0.001, 0.2, n), np.round(rng.lognormal(-0.5, 1.0, n), 3)
        for policy in ("ecpm", "highest_bid", "highest_pctr"):
            r = run_auction(pctr, bids, 3, AUCTION, policy)
            assert np.all(r.prices >= AUCTION.reserve_cpc - 1e-12) and np.all(r.prices <= bids[r.winners] + 1e-12)
            assert np.all(bids[r.winners] >= AUCTION.reserve_cpc) and np.all(np.diff(r.scores) <= 1e-15)


def test_a_campaign_with_hour_targeting_is_paced_against_the_traffic_of_its_own_hours():
    from recsys.ads.world import campaign_traffic

    campaigns = pd.DataFrame({"hour_start": [0, 12], "hour_end": [0, 0]})  # all day; noon to midnight
    pacing = PacingController(np.array([10.0, 10.0]), campaign_traffic(campaigns, np.full(24, 1 / 24)), PacingConfig())
    assert pacing.target_share(18 * 3600).tolist() == pytest.approx([0.75, 0.5])
    assert pacing.target_share(6 * 3600).tolist() == pytest.approx([0.25, 0.0])
    pacing.update(6 * 3600, np.array([2.5, 0.0]))  # the windowed one has had no traffic yet: its rate is left alone
    assert pacing.rate.tolist() == pytest.approx([1.0, 1.0])


def test_a_squashed_ranking_weighs_the_bid_more_and_prices_by_the_same_rule():
    pctr, bids = np.array([0.08, 0.02]), np.array([0.5, 1.5])  # eCPM 0.04 vs 0.03: the click-rich ad wins unsquashed
    assert run_auction(pctr, bids, 1, AUCTION, "ecpm").winners.tolist() == [0]
    squashed = AUCTION.model_copy(update={"squash": 0.5})  # 0.283 × 0.5 = 0.141 vs 0.141 × 1.5 = 0.212
    r = run_auction(pctr, bids, 2, squashed, "ecpm")
    assert r.winners.tolist() == [1, 0]
    assert r.prices[0] == pytest.approx(1.5 * (0.08 ** 0.5 * 0.5) / (0.02 ** 0.5 * 1.5))  # the least bid keeping the rank


def test_a_window_that_wraps_midnight_keeps_its_rate_through_the_closed_hours():
    """20:00 to 08:00: from 08:00 to 20:00 it cannot bid, so its spend and share stand still, and the
    48 updates of those hours must not wind its rate down to the floor before the evening."""
    from recsys.ads.world import campaign_traffic

    campaigns = pd.DataFrame({"hour_start": [20], "hour_end": [8]})
    pacing = PacingController(np.array([10.0]), campaign_traffic(campaigns, np.full(24, 1 / 24)), PacingConfig())
    spent = 0.0
    for step in range(96):  # spends slightly ahead of its traffic through the night and morning
        second = (step + 1) * 900
        if second <= 8 * 3600:
            spent = min(10.0, spent + 10.0 / 48 * 1.1 * pacing.rate[0])
        pacing.update(second, np.array([spent]))
        if second == 8 * 3600:
            at_eight = pacing.rate[0]
        if second == 20 * 3600:
            assert pacing.rate[0] == pytest.approx(at_eight)  # untouched while the window was closed
    with pytest.raises(ValueError, match="lead_s"):
        PacingConfig(lead_s=60, interval_s=900)
