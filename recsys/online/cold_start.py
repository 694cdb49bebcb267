"""Items added to the catalog while serving (POST /items), without retraining.

A new item's vectors are computed when it arrives:
- for search, its text (title, category, brand, attributes) through the search encoder;
- for recommendation and ranking, the models' own item representation minus the part only
  training gives: v = mean of its known attributes' embeddings (+ the projection of its text
  vector, from the encoder the model was trained with, for text models; a trained item's vector is
  its id embedding plus those), in the retrieval model and in the CTR ranker alike.

The item is appended to `new_items.jsonl` (fsync before the answer) beside the event store, so
every replica picks it up on its next request, and a restarted or swapped replica ingests it again;
nothing acknowledged is lost. Once a retrained model's catalog contains the item id, the log's
copy is skipped.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import torch


def cold_vector(items_module, attribute_ids: list[int], text_vector: np.ndarray | None = None) -> np.ndarray:
    """(H,) the item vector an `ItemEmbedding` gives an item with no trained id embedding: the mean
    of its known attributes' embeddings, plus the projection of its text vector (text models) —
    `ItemEmbedding.content`, the same function offline cold-start evaluation scores with."""
    attrs = torch.as_tensor([list(attribute_ids) or [0]], dtype=torch.long)
    text = None if text_vector is None else torch.as_tensor(np.asarray(text_vector)[None], dtype=torch.float32)
    with torch.no_grad():
        return items_module.content(attrs, text)[0].numpy().astype(np.float32)


class CatalogLog:
    """Append-only JSON lines of ingested items, shared by the replicas through the filesystem."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def append(self, item: dict) -> None:
        line = (json.dumps(item, sort_keys=True) + "\n").encode()
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)  # one write of a whole line: concurrent appenders never interleave
                os.fsync(fd)
            finally:
                os.close(fd)

    def read_from(self, offset: int) -> tuple[list[dict], int]:
        """(items appended since byte `offset`, the new offset); a torn last line waits for its end."""
        try:
            if self.path.stat().st_size <= offset:
                return [], offset
        except FileNotFoundError:
            return [], offset
        with self.path.open("rb") as f:
            f.seek(offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        return [json.loads(line) for line in data[:end].splitlines() if line.strip()], offset + end
