"""Train/valid/test from per-user sequences, in two leak-free protocols.

leave_one_out (the published Amazon Beauty protocol): per user, valid target = second-to-last item,
    test target = last item; train = everything before the valid target.
time: one global cut for all users. train = interactions before `valid_cut`; valid = history before
    `valid_cut` → first interaction in [valid_cut, test_cut); test = history before `test_cut` → first
    interaction at or after `test_cut`. The item vocabulary holds only items seen in training, so
    items first seen later are unknown to the model (they are dropped from histories and counted).

Every user also gets two cut times (`user_cuts`): events before the first are training data, which
the CTR and search examples use to split the same way as the sequences.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

_NO_CUT = np.iinfo(np.int64).max


def _hist(rows: list[list[int]], max_len: int) -> pa.Array:
    """The most recent `max_len` items. Training rows keep max_len + 1: next-item training turns
    them into max_len inputs, each with its target."""
    return pa.array([r[-max_len:] for r in rows], pa.list_(pa.int32()))


def leave_one_out(batch: pa.Table, split: str, min_len: int, max_len: int) -> pa.Table:
    """train: items[:-2]; valid: items[:-2] → items[-2]; test: items[:-1] → items[-1] (last max_len kept)."""
    rows = [(u, s) for u, s in zip(batch["user_id"].to_pylist(), batch["items"].to_pylist(), strict=True) if len(s) >= min_len]
    users = pa.array([u for u, _ in rows], pa.string())
    if split == "train":
        return pa.table({"user_id": users, "items": _hist([s[:-2] for _, s in rows], max_len + 1)})
    cut = 2 if split == "valid" else 1
    return pa.table({"user_id": users, "history": _hist([s[:-cut] for _, s in rows], max_len),
                     "target": pa.array([s[-cut] for _, s in rows], pa.int32())})


def time_cut(batch: pa.Table, split: str, valid_cut: int, test_cut: int, max_len: int) -> pa.Table:
    """The global time split. `items` here may hold nulls (items unknown to the training vocabulary)."""
    users, out_hist, out_target = [], [], []
    for user, items, stamps in zip(batch["user_id"].to_pylist(), batch["items"].to_pylist(),
                                   batch["timestamps"].to_pylist(), strict=True):
        cut = valid_cut if split in ("train", "valid") else test_cut
        history = [i for i, t in zip(items, stamps, strict=True) if t < cut and i is not None]
        if split == "train":
            if len(history) >= 2:  # one item teaches nothing about what comes next
                users.append(user)
                out_hist.append(history)
            continue
        end = test_cut if split == "valid" else _NO_CUT
        target = next((i for i, t in zip(items, stamps, strict=True) if cut <= t < end and i is not None), None)
        if history and target is not None:
            users.append(user)
            out_hist.append(history)
            out_target.append(target)
    table = {"user_id": pa.array(users, pa.string())}
    if split == "train":
        return pa.table({**table, "items": _hist(out_hist, max_len + 1)})
    return pa.table({**table, "history": _hist(out_hist, max_len), "target": pa.array(out_target, pa.int32())})


def user_cuts(sequences: pa.Table, mode: str, min_len: int, valid_cut: int, test_cut: int) -> tuple[np.ndarray, np.ndarray]:
    """(valid_cut_ms, test_cut_ms) per sequence row: events before the first are training data."""
    n = sequences.num_rows
    if mode == "time":
        return np.full(n, valid_cut, np.int64), np.full(n, test_cut, np.int64)
    valid = np.full(n, _NO_CUT, np.int64)
    test = np.full(n, _NO_CUT, np.int64)
    for r, stamps in enumerate(sequences["timestamps"].to_pylist()):
        if len(stamps) >= min_len:
            valid[r], test[r] = stamps[-2], stamps[-1]
    return valid, test


def split_of(ts: np.ndarray, valid_cut: np.ndarray, test_cut: np.ndarray) -> pa.Array:
    """'train' / 'valid' / 'test' for events at `ts`, given their user's cuts."""
    labels = np.where(ts < valid_cut, 0, np.where(ts < test_cut, 1, 2))
    return pa.DictionaryArray.from_arrays(pa.array(labels, pa.int8()), pa.array(["train", "valid", "test"])).cast(pa.string())
