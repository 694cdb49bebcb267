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
    inputs = left_pad([s[:-1] for s in seqs], max_len)
    labels = left_pad([s[1:] for s in seqs], max_len)
    return inputs, labels


def masked_item_batch(
    histories: list, max_len: int, mask_prob: float, mask_index: int, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cloze task: hide a random share of items behind [MASK]; labels hold the hidden items.

    Every non-empty sequence gets at least one mask, and its last item is masked with the same
    probability as any other, so pretraining also practises the next-item case.
    """
    inputs = left_pad(histories, max_len)
    real = inputs > 0
    chosen = torch.from_numpy(rng.random(inputs.shape) < mask_prob) & real
    # Rows with items but nothing chosen: mask one random real position.
    for row in torch.nonzero(real.any(1) & ~chosen.any(1)).flatten().tolist():
        positions = torch.nonzero(real[row]).flatten()
        chosen[row, positions[rng.integers(len(positions))]] = True
    labels = torch.where(chosen, inputs, torch.zeros_like(inputs))
    inputs = torch.where(chosen, torch.full_like(inputs, mask_index), inputs)
    return inputs, labels
