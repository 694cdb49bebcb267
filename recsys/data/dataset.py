"""A prepared dataset version on disk, as written by `prepare_dataset`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from recsys.artifacts import latest_version


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

    @classmethod
    def latest(cls, root: Path) -> PreparedDataset:
        return cls(latest_version(Path(root), "prepared dataset", "prepare"))

    @cached_property
    def manifest(self) -> dict:
        return json.loads((self.path / "manifest.json").read_text())

    @property
    def num_items(self) -> int:
        return self.manifest["vocab"]["num_items"]

    @property
    def num_attributes(self) -> int:
        return self.manifest["vocab"]["num_attributes"]

    PARTS = ("train", "valid", "test", "sequences", "events", "quarantine", "examples/ctr", "examples/search")

    def split_dir(self, split: str) -> str:
        if split not in self.PARTS:
            raise ValueError(f"unknown part {split!r}; use one of {', '.join(self.PARTS)}")
        return str(self.path / split)

    def read_split(self, split: str) -> pd.DataFrame:
        return pq.read_table(self.split_dir(split)).to_pandas()

    def items(self) -> pd.DataFrame:
        return pq.read_table(self.path / "items.parquet").to_pandas()

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
