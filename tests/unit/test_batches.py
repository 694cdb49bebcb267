import numpy as np

from recsys.train.batches import masked_item_batch, next_item_batch


def test_next_item_pairs_are_shifted_and_right_aligned():
    inputs, labels = next_item_batch([np.array([5, 6, 7, 8]), np.array([9])], max_len=3)
    assert inputs.tolist() == [[5, 6, 7], [0, 0, 0]]
    assert labels.tolist() == [[6, 7, 8], [0, 0, 0]]


def test_masking_hides_items_and_labels_only_masked_positions():
    rng = np.random.default_rng(0)
    hist = [list(range(1, 11)), [3], []]
    inputs, labels = masked_item_batch(hist, max_len=10, mask_prob=0.3, mask_index=99, rng=rng)
    masked = inputs == 99
    assert masked[0].any() and masked[1].any()  # every non-empty row gets at least one mask
    assert not masked[2].any() and (labels[2] == 0).all()
    assert ((labels > 0) == masked).all()
    original = np.array([list(range(1, 11))])
    assert (labels[0][masked[0]].numpy() == original[0][masked[0].numpy()]).all()
