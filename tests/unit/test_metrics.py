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
