import math

import numpy as np
import pytest
import torch

from recsys.eval.metrics import hit_and_ndcg, target_ranks


def test_rank_counts_higher_scores_and_breaks_ties_by_index():
    scores = torch.tensor([[0.0, 0.9, 0.5, 0.5, 0.1]])
    assert target_ranks(scores, torch.tensor([3])).tolist() == [2]  # 0.9 above, tie with item 2 before it
    assert target_ranks(scores, torch.tensor([2])).tolist() == [1]


def test_history_is_excluded_but_never_the_target():
    scores = torch.tensor([[0.0, 0.9, 0.8, 0.5]])
    assert target_ranks(scores, torch.tensor([3]), exclude=[[1, 2]]).tolist() == [0]
    assert target_ranks(scores, torch.tensor([2]), exclude=[[1, 2]]).tolist() == [0]


def test_constant_scores_get_no_free_hit():
    scores = torch.zeros(1, 1000)
    assert target_ranks(scores, torch.tensor([900])).tolist() == [900]


def test_hit_and_ndcg_values():
    m = hit_and_ndcg(np.array([0, 4, 30]), [5, 10])
    assert m["hr@5"] == pytest.approx(2 / 3)
    assert m["ndcg@5"] == pytest.approx((1 + 1 / math.log2(6)) / 3)
    assert m["hr@10"] == pytest.approx(2 / 3)
    assert m["mrr"] == pytest.approx((1 + 1 / 5 + 1 / 31) / 3)


def test_auc_hand_computed_with_ties():
    from recsys.eval.metrics import auc

    # positives 0.8, 0.4; negatives 0.4, 0.1: pairs (0.8>0.4, 0.8>0.1, 0.4=0.4 → ½, 0.4>0.1) = 3.5 / 4
    assert auc([1, 1, 0, 0], [0.8, 0.4, 0.4, 0.1]) == pytest.approx(0.875)
    assert auc([1, 0], [0.2, 0.9]) == 0.0 and auc([1, 0], [0.5, 0.5]) == 0.5
    assert math.isnan(auc([1, 1], [0.1, 0.2]))


def test_gauc_weights_users_by_impressions_and_skips_one_class_users():
    from recsys.eval.metrics import gauc

    labels = [1, 0, 0, 1, 0, 1, 1]
    scores = [0.9, 0.1, 0.2, 0.3, 0.5, 0.4, 0.6]
    users = ["a", "a", "a", "b", "b", "c", "c"]  # a: AUC 1 (3 rows), b: AUC 0 (2 rows), c: one class
    assert gauc(labels, scores, users) == pytest.approx((1.0 * 3 + 0.0 * 2) / 5)


def test_log_loss_matches_the_formula_and_clips():
    from recsys.eval.metrics import log_loss

    assert log_loss([1, 0], [0.8, 0.25]) == pytest.approx(-(math.log(0.8) + math.log(0.75)) / 2)
    assert log_loss([1], [0.0]) == pytest.approx(-math.log(1e-7))


def test_mrr_at_k_counts_only_the_top_k():
    m = hit_and_ndcg(np.array([0, 4, 30]), [5, 10])
    assert m["mrr@5"] == pytest.approx((1 + 1 / 5) / 3)
    assert m["mrr@10"] == pytest.approx((1 + 1 / 5) / 3)
    assert m["mrr"] == pytest.approx((1 + 1 / 5 + 1 / 31) / 3)


def test_sampled_ranking_counts_ties_against_the_target_and_never_samples_history():
    from recsys.config import EvalConfig
    from recsys.eval.evaluate import rank_rows, sample_negatives

    scores = torch.tensor([[0.0, 5.0, 3.0, 3.0, 1.0, 9.0]])
    negatives = np.array([[2, 4, 5]])  # scores 3, 1, 9 against the target's 3
    ranks = rank_rows(lambda hist: scores, [[1]], np.array([3]), EvalConfig(), negatives)
    assert ranks.tolist() == [2]  # 9 is higher, the tie 3 counts against
    pop = np.array([-np.inf, 100.0, 1.0, 1.0, 1.0, -np.inf])
    drawn = sample_negatives(pop, [[1, 2]], np.array([3]), 50, True, np.random.default_rng(0))
    assert set(drawn.ravel()) == {4}  # not pad/mask, not the target, not the history
