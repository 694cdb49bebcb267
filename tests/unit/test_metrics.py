"""recsys/eval/metrics.py: one tie rule (random tie-break, exact expectation) for every ranking metric."""

import itertools
import math

import numpy as np
import pytest
import torch

from recsys.eval.metrics import graded_metrics, mean_graded_metrics, ranking_metrics, tie_counts


def d(p):  # DCG discount of 0-based position p
    return 1 / math.log2(p + 2)


def test_tie_counts_are_strictly_higher_and_other_tied_items():
    scores = torch.tensor([[0.0, 0.9, 0.5, 0.5, 0.1]])
    assert tie_counts(scores, torch.tensor([3])).tolist() == [[1, 1]]  # 0.9 above, item 2 tied
    assert tie_counts(scores, [2]).tolist() == [[1, 1]]  # the same for item 2: no item-index preference
    assert tie_counts(scores, [1]).tolist() == [[0, 0]] and tie_counts(scores.numpy(), [0]).tolist() == [[4, 0]]


def test_metrics_are_the_expectation_over_the_tied_positions():
    # (higher 1, tied 1): the target sits at position 1 or 2, each with probability 1/2.
    m = ranking_metrics(np.array([[1, 1]]), [1, 2, 5])
    assert m["hr@1"] == 0 and m["hr@2"] == 0.5 and m["hr@5"] == 1
    assert m["ndcg@2"] == pytest.approx(d(1) / 2) and m["ndcg@5"] == pytest.approx((d(1) + d(2)) / 2)
    assert m["mrr@2"] == pytest.approx(1 / 4) and m["mrr"] == pytest.approx((1 / 2 + 1 / 3) / 2)
    # No ties: the usual point values, averaged over rows.
    m = ranking_metrics(np.array([[0, 0], [4, 0], [30, 0]]), [5, 10])
    assert m["hr@5"] == pytest.approx(2 / 3) and m["hr@10"] == pytest.approx(2 / 3)
    assert m["ndcg@5"] == pytest.approx((1 + d(4)) / 3)
    assert m["mrr@5"] == pytest.approx((1 + 1 / 5) / 3) and m["mrr"] == pytest.approx((1 + 1 / 5 + 1 / 31) / 3)
    assert set(m) == {"hr@5", "ndcg@5", "mrr@5", "hr@10", "ndcg@10", "mrr@10", "mrr"}


def test_a_constant_scorer_gets_the_metrics_of_a_random_ranking():
    n = 1000  # every item equally likely at every position: P(position p) = 1/n
    counts = tie_counts(torch.zeros(3, n), [0, 500, 999])
    assert counts.tolist() == [[0, n - 1]] * 3
    m = ranking_metrics(counts, [10])
    assert m["hr@10"] == pytest.approx(10 / n)  # no free hit, no unfair zero
    assert m["ndcg@10"] == pytest.approx(sum(d(p) for p in range(10)) / n)
    assert m["mrr"] == pytest.approx(sum(1 / (p + 1) for p in range(n)) / n)


def test_history_is_excluded_but_never_the_target():
    scores = torch.tensor([[0.0, 0.9, 0.8, 0.5]])
    assert tie_counts(scores, [3], exclude=[[1, 2]]).tolist() == [[0, 0]]
    assert tie_counts(scores, [2], exclude=[[1, 2, 2]]).tolist() == [[0, 0]]  # the target is in its history
    tied = torch.full((2, 4), 0.5)
    assert tie_counts(tied, [1, 3], exclude=[[1, 2], []]).tolist() == [[0, 2], [0, 3]]


def test_sampled_ranking_uses_the_same_rule_and_never_samples_history():
    from recsys.config import EvalConfig
    from recsys.eval.evaluate import count_rows, sample_negatives

    scores = torch.tensor([[0.0, 5.0, 3.0, 3.0, 1.0, 9.0]])
    negatives = np.array([[2, 4, 5]])  # scores 3, 1, 9 against the target's 3
    counts = count_rows(lambda hist: scores, [[1]], np.array([3]), EvalConfig(), negatives)
    assert counts.tolist() == [[1, 1]]  # 9 is higher, the 3 is a tie (half a loss in expectation)
    assert counts.tolist() == tie_counts(torch.tensor([[3.0, 3.0, 1.0, 9.0]]), [0]).tolist()
    pop = np.array([-np.inf, 100.0, 1.0, 1.0, 1.0, -np.inf])
    drawn = sample_negatives(pop, [[1, 2]], np.array([3]), 50, True, np.random.default_rng(0))
    assert set(drawn.ravel()) == {4}  # not pad/mask, not the target, not the history


def test_graded_ndcg_recall_and_mrr_by_hand():
    scores = np.array([0.9, 0.5, 0.5, 0.1])
    rel = {0: 1, 2: 3, 3: 2, 1: 0}  # item 2 (grade 3) shares positions 1..2 with item 1 (grade 0)
    m = graded_metrics(scores, rel, [2, 4])
    ideal4, ideal2 = 3 * d(0) + 2 * d(1) + 1 * d(2), 3 * d(0) + 2 * d(1)
    assert m["ndcg@4"] == pytest.approx((1 * d(0) + 3 * (d(1) + d(2)) / 2 + 2 * d(3)) / ideal4)
    assert m["ndcg@2"] == pytest.approx((1 * d(0) + 3 * d(1) / 2) / ideal2)
    assert m["recall@2"] == pytest.approx((1 + 0.5 + 0) / 3) and m["recall@4"] == 1
    assert m["mrr"] == 1
    # Two relevant among four tied: the first relevant is at 0, 1, 2 with probability 1/2, 1/3, 1/6.
    assert graded_metrics(np.zeros(4), {1: 1, 2: 1}, [1])["mrr"] == pytest.approx(1 / 2 + 1 / 3 / 2 + 1 / 6 / 3)
    with pytest.raises(ValueError, match="no relevant item"):
        graded_metrics(scores, {1: 0}, [2])


def test_graded_with_one_relevant_item_equals_the_single_target_metrics():
    scores = np.array([0.3, 0.7, 0.3, 0.3, 0.9, 0.3, 0.1])
    for target in range(len(scores)):
        g = graded_metrics(scores, {target: 1}, [1, 3, 5])
        m = ranking_metrics(tie_counts(scores[None], [target]), [1, 3, 5])
        for k in (1, 3, 5):
            assert g[f"ndcg@{k}"] == pytest.approx(m[f"ndcg@{k}"]) and g[f"recall@{k}"] == pytest.approx(m[f"hr@{k}"])
        assert g["mrr"] == pytest.approx(m["mrr"])
    means = mean_graded_metrics([(scores, {4: 1}), (scores, {6: 2})], [1])
    assert means == {"ndcg@1": 0.5, "recall@1": 0.5, "mrr": pytest.approx((1 + 1 / 7) / 2), "queries": 2}


def _all_tie_orders(scores):
    """Every ranking a random tie-break can give, each as often as it is likely: the stable sort by
    score of every permutation of the items."""
    n = len(scores)
    for perm in itertools.permutations(range(n)):
        yield sorted(perm, key=lambda i: -scores[i])


def test_against_a_brute_force_average_over_every_tie_order():
    scores = np.array([0.2, 0.5, 0.2, 0.5, 0.5, 0.2, 0.9])  # 7! = 5040 orders
    orders = list(_all_tie_orders(scores))
    ks = [1, 2, 4]
    for target, exclude in ((0, []), (3, []), (4, [1, 6]), (6, [6, 2])):
        keep = [i for i in range(len(scores)) if i == target or i not in exclude]
        rows = []
        for order in orders:
            p = [i for i in order if i in keep].index(target)
            rows.append({**{f"hr@{k}": p < k for k in ks}, **{f"ndcg@{k}": (p < k) * d(p) for k in ks},
                         **{f"mrr@{k}": (p < k) / (p + 1) for k in ks}, "mrr": 1 / (p + 1)})
        m = ranking_metrics(tie_counts(torch.tensor(scores[None]), [target], [exclude]), ks)
        for key in m:
            assert m[key] == pytest.approx(np.mean([r[key] for r in rows])), (target, key)
    rel = {0: 2, 3: 1, 5: 3}
    ideal = {k: sum(g * d(i) for i, g in enumerate(sorted(rel.values(), reverse=True)[:k])) for k in ks}
    rows = []
    for order in orders:
        pos = {item: p for p, item in enumerate(order)}
        rows.append({**{f"ndcg@{k}": sum(g * d(pos[i]) for i, g in rel.items() if pos[i] < k) / ideal[k] for k in ks},
                     **{f"recall@{k}": sum(pos[i] < k for i in rel) / len(rel) for k in ks},
                     "mrr": 1 / (min(pos[i] for i in rel) + 1)})
    g = graded_metrics(scores, rel, ks)
    for key in g:
        assert g[key] == pytest.approx(np.mean([r[key] for r in rows])), key


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
