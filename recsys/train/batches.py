"""Training examples for each objective, built per micro-batch from raw item histories (no Ray)."""

from __future__ import annotations

import numpy as np
import torch

from recsys.models.seqrec import left_pad


def next_item_batch(histories: list, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Shifted pairs: position t sees items[:t+1] and is labelled with items[t+1].

    Returns right-aligned (B, max_len) inputs and labels (0 = no target).
    """
    seqs = [list(h)[-(max_len + 1) :] for h in histories]
    width = _batch_width(seqs, max_len, shift=1)
    inputs = left_pad([s[:-1] for s in seqs], width)
    labels = left_pad([s[1:] for s in seqs], width)
    return inputs, labels


def _batch_width(seqs: list, max_len: int, shift: int = 0) -> int:
    """Pad only to the longest sequence in the batch: most histories are far below max_len."""
    return max(1, min(max_len, max((len(s) - shift for s in seqs), default=1)))


def length_bucketed(batches, batch_size: int, rng: np.random.Generator):
    """Regroup windows of rows into batches of similar length (less padding), in random order.

    Each window of n rows always yields ceil(n / batch_size) batches, so workers that receive
    equal row counts (Ray Train's equal split) still run the same number of steps.
    """
    for window in batches:
        items = window["items"]
        order = np.argsort([len(x) for x in items], kind="stable")
        chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        for pick in rng.permutation(len(chunks)):
            yield [items[j] for j in chunks[pick]]


def masked_item_batch(
    histories: list, max_len: int, mask_prob: float, mask_index: int, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cloze task: hide a random share of items behind [MASK]; labels hold the hidden items.

    Every non-empty sequence gets at least one mask, and its last item is masked with the same
    probability as any other, so pretraining also practises the next-item case.
    """
    inputs = left_pad(histories, _batch_width(histories, max_len))
    real = inputs > 0
    chosen = torch.from_numpy(rng.random(inputs.shape) < mask_prob) & real
    # Rows with items but nothing chosen: mask one random real position.
    for row in torch.nonzero(real.any(1) & ~chosen.any(1)).flatten().tolist():
        positions = torch.nonzero(real[row]).flatten()
        chosen[row, positions[rng.integers(len(positions))]] = True
    labels = torch.where(chosen, inputs, torch.zeros_like(inputs))
    inputs = torch.where(chosen, torch.full_like(inputs, mask_index), inputs)
    return inputs, labels
