"""A prepared dataset version on disk, as written by `prepare_dataset` (the store's `dataset` kind:
recsys.artifacts finds the latest one)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


@dataclass(frozen=True)
class PreparedDataset:
    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        if not (self.path / "manifest.json").is_file():
            raise FileNotFoundError(
                f"{self.path} is not a prepared dataset (no manifest.json); run the prepare stage first: "
                "python ray_jobs/prepare_data.py --config <file>"
            )

    @cached_property
    def manifest(self) -> dict:
        return json.loads((self.path / "manifest.json").read_text())

    @property
    def num_items(self) -> int:
        return self.manifest["vocab"]["num_items"]

    @property
    def num_attributes(self) -> int:
        return self.manifest["vocab"]["num_attributes"]

    PARTS = ("train", "valid", "test", "sequences", "events", "quarantine", "examples/ctr", "examples/search", "cold_targets")

    def split_dir(self, split: str) -> str:
        if split not in self.PARTS:
            raise ValueError(f"unknown part {split!r}; use one of {', '.join(self.PARTS)}")
        return str(self.path / split)

    def read_split(self, split: str) -> pd.DataFrame:
        return pq.read_table(self.split_dir(split)).to_pandas()

    def items(self) -> pd.DataFrame:
        return pq.read_table(self.path / "items.parquet").to_pandas()

    @cached_property
    def num_cold_items(self) -> int:
        """M, the cold items of a time split (0 under leave-one-out), from the file's metadata."""
        path = self.path / "cold_items.parquet"
        return pq.ParquetFile(path).metadata.num_rows if path.is_file() else 0

    def cold_items(self) -> pd.DataFrame:
        """Catalog items outside the vocabulary (time split; recsys/data/cold.py), `item_index` N + 2 + k;
        empty under leave-one-out, where the vocabulary is the catalog."""
        path = self.path / "cold_items.parquet"
        if not path.is_file():
            return pd.DataFrame({"item_index": pd.Series([], dtype="int32"), "item_id": pd.Series([], dtype=object),
                                 "attribute_indices": pd.Series([], dtype=object)})
        return pq.read_table(path).to_pandas()

    def cold_targets(self, split: str) -> pd.DataFrame:
        """The split's rows whose target is a cold item (history → extended index); empty when none."""
        folder = self.path / "cold_targets"
        if not folder.is_dir() or not any(folder.rglob("*.parquet")):
            return pd.DataFrame({"user_id": [], "history": [], "target": pd.Series([], dtype="int32")})
        return pq.read_table(folder, filters=[("split", "=", split)]).to_pandas()

    def cold_attribute_matrix(self, max_attributes: int) -> np.ndarray:
        """(M, max_attributes) known attribute indices of the cold items, 0-padded, row k = index N + 2 + k."""
        cold = self.cold_items()
        out = np.zeros((len(cold), max_attributes), dtype=np.int64)
        for row, attrs in enumerate(cold["attribute_indices"]):
            attrs = list(attrs)[:max_attributes]
            out[row, : len(attrs)] = attrs
        return out

    def attribute_matrix(self, max_attributes: int) -> np.ndarray:
        """(num_items + 2, max_attributes) attribute indices per item index, 0-padded.

        Row 0 (padding) and row N+1 ([MASK]) have no attributes.
        """
        items = pq.read_table(self.path / "items.parquet", columns=["item_index", "attribute_indices"]).to_pydict()
        out = np.zeros((self.num_items + 2, max_attributes), dtype=np.int64)
        for idx, attrs in zip(items["item_index"], items["attribute_indices"], strict=True):
            attrs = attrs[:max_attributes]
            out[idx, : len(attrs)] = attrs
        return out

    def ctr_rows(self, split: str) -> pa.Table:
        """CTR impressions of one split with the user's history at impression time:
        history (item indices before the impression), candidate, hour, weekday, session_position,
        label, user (an int code for GAUC). Raises when the data has no impressions."""
        ex = pq.read_table(self.split_dir("examples/ctr"), filters=[("split", "=", split)])
        if ex.num_rows == 0:
            raise ValueError(
                f"{self.path} has no CTR impressions in split {split!r} (examples/ctr); the ctr stage needs logs "
                "with impression events (the synthetic shop has them, Amazon Beauty does not): set ctr.enabled: false"
            )
        seqs = pq.read_table(self.split_dir("sequences"), columns=["user_id", "items"]).to_pydict()
        by_user = dict(zip(seqs["user_id"], seqs["items"], strict=True))
        users = ex["user_id"].to_pylist()
        lens = ex["history_len"].to_numpy()
        history = [by_user[u][:n] for u, n in zip(users, lens, strict=True)]
        codes = {u: i for i, u in enumerate(dict.fromkeys(users))}
        return pa.table({
            "history": pa.array(history, pa.list_(pa.int64())),
            "candidate": ex["candidate"].cast(pa.int64()),
            "hour": ex["hour"].cast(pa.int64()),
            "weekday": ex["weekday"].cast(pa.int64()),
            "session_position": ex["session_position"].cast(pa.int64()),
            "label": ex["label"].cast(pa.int64()),
            "user": pa.array([codes[u] for u in users], pa.int64()),
        })
