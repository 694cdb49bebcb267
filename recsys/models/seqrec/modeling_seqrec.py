"""The sequential recommender: items → ItemEmbedding → transformer encoder → scores over all items.

One encoder, two attention modes:
- bidirectional, for masked-item pretraining (BERT4Rec-style cloze task);
- causal, for next-item fine-tuning and inference (SASRec-style, every position predicts the next).
Scores are dot products with the item table itself (tied output), so a new objective never adds a
second copy of the catalog.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from recsys.models.seqrec.configuration_seqrec import SeqRecConfig


def left_pad(histories: list[list[int]], max_len: int) -> torch.Tensor:
    """Keep each history's most recent `max_len` items, right-aligned: (B, max_len), 0 = pad.

    Right alignment puts the newest item at the last position for every row, which is where the
    causal encoder reads the user state.
    """
    out = np.zeros((len(histories), max_len), dtype=np.int64)  # numpy: per-row torch writes cost ~10x
    for row, items in enumerate(histories):
        items = np.asarray(items, dtype=np.int64)[-max_len:]
        if len(items):
            out[row, max_len - len(items) :] = items
    return torch.from_numpy(out)


@dataclass
class SeqRecLoss(ModelOutput):
    """A training step's loss and its parts (detached parts are what the loop reports)."""

    loss: torch.Tensor | None = None
    item_loss: torch.Tensor | None = None
    attribute_loss: torch.Tensor | None = None
    content_loss: torch.Tensor | None = None


class ItemEmbedding(nn.Module):
    """Item vector = id embedding + mean of the item's attribute embeddings, plus, when
    `text_embedding_dim` > 0, a learned projection of the item's frozen text embedding."""

    def __init__(self, config: SeqRecConfig):
        super().__init__()
        self.id_embedding = nn.Embedding(config.num_items + 2, config.hidden_size, padding_idx=0)
        self.use_attributes = config.attribute_embeddings
        # item index → attribute indices; a buffer so it travels inside the safetensors file.
        self.register_buffer(
            "item_attributes",
            torch.zeros(config.num_items + 2, config.max_attributes_per_item, dtype=torch.long),
            persistent=True,
        )
        if self.use_attributes:
            self.attribute_embedding = nn.Embedding(config.num_attributes + 1, config.hidden_size, padding_idx=0)
        self.id_dropout = config.id_dropout
        self.use_ids, self.mask_index = config.item_ids, config.num_items + 1
        self._keep: torch.Tensor | None = None  # this training step's id-dropout mask (draw_id_dropout)
        self.use_text = config.text_embedding_dim > 0
        if self.use_text:
            # Frozen (a buffer, not a parameter): the optimizer never changes it, it travels in the weights.
            self.register_buffer("item_text", torch.zeros(config.num_items + 2, config.text_embedding_dim))
            self.text_projection = nn.Linear(config.text_embedding_dim, config.hidden_size, bias=False)

    def forward(self, item_ids: torch.Tensor) -> torch.Tensor:  # (...,) -> (..., H)
        text = self.item_text[item_ids] if self.use_text else None
        ids = self.id_embedding(item_ids)
        if not self.use_ids:  # content-only items; [MASK] alone keeps its learned vector
            ids = ids * (item_ids == self.mask_index).unsqueeze(-1).to(ids.dtype)
        elif self.training and self._keep is not None:
            ids = ids * self._keep[item_ids].unsqueeze(-1).to(ids.dtype)
        return ids + self.content(self.item_attributes[item_ids], text)

    def draw_id_dropout(self) -> None:
        """One training step's id dropout: the same items lose their id embedding on the input side,
        as targets and as negatives (per item, not per position: the item is "new" in this step);
        [MASK] never does. A no-op without `id_dropout`."""
        if not (self.use_ids and self.id_dropout > 0):
            return
        keep = torch.rand(self.id_embedding.num_embeddings, device=self.item_attributes.device) >= self.id_dropout
        keep[self.mask_index] = True
        self._keep = keep

    def content(self, attributes: torch.Tensor, text: torch.Tensor | None = None) -> torch.Tensor:
        """(..., A) attribute indices (0 = none) and (..., D) text vectors → (..., H): the part of an
        item vector that needs no trained id embedding. A trained item's vector is its id embedding
        plus this; a product the model never saw (a cold target, a POST /items) is this alone."""
        dtype = self.id_embedding.weight.dtype  # bf16 under DeepSpeed bf16, like the id part it is added to
        vec = torch.zeros(*attributes.shape[:-1], self.id_embedding.embedding_dim, device=attributes.device, dtype=dtype)
        if self.use_attributes:
            present = (attributes > 0).unsqueeze(-1).to(dtype)
            summed = (self.attribute_embedding(attributes) * present).sum(-2)
            vec = vec + summed / present.sum(-2).clamp(min=1.0)
        if self.use_text and text is not None:
            vec = vec + self.text_projection(text)
        return vec

    @property
    def has_content(self) -> bool:
        """Whether an item without an id embedding gets a vector at all (id-only models: no)."""
        return self.use_attributes or self.use_text

    def content_table(self) -> torch.Tensor:
        """(N + 2, H) content vectors of every index: what each item would be without its id embedding."""
        return self.content(self.item_attributes, self.item_text if self.use_text else None)

    def attribute_table(self) -> torch.Tensor:
        """Vectors of every attribute index 0..A (called through __call__ for ZeRO-3, like catalog)."""
        device = self.item_attributes.device
        return self.attribute_embedding(torch.arange(self.attribute_embedding.num_embeddings, device=device))

    def catalog(self) -> torch.Tensor:
        """Vectors of every index 0..N+1 (padding and [MASK] included, masked out when scoring)."""
        # Called through __call__ so ZeRO-3 gathers the partitioned tables first.
        return self(torch.arange(self.id_embedding.num_embeddings, device=self.item_attributes.device))


class SeqRecModel(PreTrainedModel):
    config_class = SeqRecConfig
    base_model_prefix = "seqrec"
    main_input_name = "input_ids"

    def __init__(self, config: SeqRecConfig):
        super().__init__(config)
        self.items = ItemEmbedding(config)
        self.position_embedding = nn.Embedding(config.max_seq_len, config.hidden_size)
        self.input_norm = nn.LayerNorm(config.hidden_size)
        self.dropout = nn.Dropout(config.dropout)
        layer = nn.TransformerEncoderLayer(
            d_model=config.hidden_size,
            nhead=config.num_heads,
            dim_feedforward=config.intermediate_size,
            dropout=config.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers=config.num_layers, enable_nested_tensor=False)
        self.output_norm = nn.LayerNorm(config.hidden_size)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, 0.0, std)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def set_item_attributes(self, table: torch.Tensor) -> None:
        expected = tuple(self.items.item_attributes.shape)
        if tuple(table.shape) != expected:
            raise ValueError(f"item attribute table has shape {tuple(table.shape)}, expected {expected}")
        self.items.item_attributes.copy_(torch.as_tensor(table, dtype=torch.long))

    def set_item_text_embeddings(self, table: torch.Tensor) -> None:
        """(num_items + 2, text_embedding_dim) frozen text vectors; rows 0 and N+1 are ignored."""
        if not self.items.use_text:
            raise ValueError("this model has text_embedding_dim 0; build it with text_embedding_dim > 0")
        expected = tuple(self.items.item_text.shape)
        if tuple(table.shape) != expected:
            raise ValueError(f"item text table has shape {tuple(table.shape)}, expected {expected}")
        self.items.item_text.copy_(torch.as_tensor(table, dtype=torch.float32))

    def attention_mask(self, input_ids: torch.Tensor, causal: bool) -> torch.Tensor:
        """(B, L) → (B * heads, L, L) bool, True = may not attend.

        Real positions never attend to padding (nor, when causal, to later positions). Padding
        positions attend to themselves only: a fully blocked row would give NaN, and NaN values
        leak through zero attention weights into real positions in the next layer.
        """
        batch, length = input_ids.shape
        pad = input_ids == self.config.pad_index  # (B, L)
        blocked = pad[:, None, :].expand(batch, length, length).clone()  # (B, L_query, L_key)
        if causal:
            blocked |= torch.ones(length, length, dtype=torch.bool, device=input_ids.device).triu(diagonal=1)
        blocked &= ~torch.eye(length, dtype=torch.bool, device=input_ids.device)
        return blocked.repeat_interleave(self.config.num_heads, dim=0)

    def encode(self, input_ids: torch.Tensor, causal: bool) -> torch.Tensor:
        """(B, L) item indices → (B, L, H) contextual states."""
        _, length = input_ids.shape
        if length > self.config.max_seq_len:
            raise ValueError(f"sequence length {length} exceeds max_seq_len {self.config.max_seq_len}")
        # Right-aligned positions: the newest item always gets the same position embedding.
        positions = torch.arange(self.config.max_seq_len - length, self.config.max_seq_len, device=input_ids.device)
        x = self.items(input_ids) + self.position_embedding(positions)[None]
        x = self.dropout(self.input_norm(x))
        x = self.encoder(x, mask=self.attention_mask(input_ids, causal))
        return self.output_norm(x)

    def item_logits(self, states: torch.Tensor) -> torch.Tensor:
        """(..., H) → (..., N + 2) scores; padding and [MASK] can never win."""
        logits = states @ self.items.catalog().T
        logits[..., self.config.pad_index] = float("-inf")
        logits[..., self.config.mask_index] = float("-inf")
        return logits

    def _zero_loss(self, states: torch.Tensor) -> torch.Tensor:
        """No target in this micro-batch: a zero that still touches every parameter, so all
        data-parallel ranks run the same backward and the collectives stay in step."""
        return self.item_logits(states[:, -1]).nan_to_num(0.0, 0.0, 0.0).sum() * 0.0

    def _item_loss(
        self,
        states: torch.Tensor,
        labels: torch.Tensor,
        negatives: torch.Tensor | None = None,
        log_q: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Cross-entropy of the labelled positions (labels > 0) against the catalog.

        Full softmax when `negatives` is None. Otherwise sampled softmax with log-Q correction
        (Bengio & Senécal 2008; Yi et al. 2019): the target competes with the shared sampled
        `negatives` (S,), every logit minus log Q(item), where `log_q` (N + 2,) is the log of the
        expected number of times each item is drawn; a negative equal to the target is masked.
        """
        picked = labels > 0
        if not picked.any():
            return self._zero_loss(states)
        s, y = states[picked], labels[picked]
        if negatives is None:
            return F.cross_entropy(self.item_logits(s), y)
        if log_q is None:
            raise ValueError("sampled softmax needs log_q, the log expected sample count of every item")
        positive = (s * self.items(y)).sum(-1) - log_q[y]
        negative = s @ self.items(negatives).T - log_q[negatives][None]
        negative = negative.masked_fill(negatives[None] == y[:, None], float("-inf"))
        logits = torch.cat([positive[:, None], negative], dim=1)
        return F.cross_entropy(logits, torch.zeros(len(y), dtype=torch.long, device=logits.device))

    def _attribute_loss(self, states: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Masked-attribute prediction (S3-Rec's MAP, tied to the attribute table): from the state at a
        masked position, predict every attribute of the hidden item (multi-label BCE over all attributes)."""
        picked = labels > 0
        if not self.items.use_attributes:
            raise ValueError("attribute_loss_weight > 0 needs a model with attribute_embeddings and num_attributes > 0")
        table = self.items.attribute_table()  # (A + 1, H)
        if not picked.any():
            return (states[:, -1] @ table.T).sum() * 0.0
        logits = (states[picked] @ table.T)[:, 1:]  # attribute 0 is padding
        attrs = self.items.item_attributes[labels[picked]]  # (M, max_attributes)
        target = torch.zeros(len(attrs), table.shape[0], device=logits.device).scatter_(1, attrs, 1.0)[:, 1:]
        return F.binary_cross_entropy_with_logits(logits, target)

    def _content_loss(self, states: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the labelled positions against the catalog's content vectors alone
        (`ItemEmbedding.content`: attributes + projected text, no id embedding): the state must
        find the item by what it is, as it must for a product it never saw. In pretraining this is
        the text-alignment objective (the masked position's state against the item's text)."""
        if not self.items.has_content:
            raise ValueError("content_loss_weight > 0 needs a model with attribute embeddings or text features")
        table = self.items.content_table()
        picked = labels > 0
        if not picked.any():
            return (states[:, -1] @ table.T).sum() * 0.0
        logits = states[picked] @ table.T
        logits[:, self.config.pad_index] = float("-inf")
        logits[:, self.config.mask_index] = float("-inf")
        return F.cross_entropy(logits, labels[picked])

    def _with_extras(self, states, labels, item_loss, attribute_loss_weight: float, content_loss_weight: float) -> SeqRecLoss:
        out = SeqRecLoss(loss=item_loss, item_loss=item_loss)
        if attribute_loss_weight > 0:
            out.attribute_loss = self._attribute_loss(states, labels)
            out.loss = out.loss + attribute_loss_weight * out.attribute_loss
        if content_loss_weight > 0:
            out.content_loss = self._content_loss(states, labels)
            out.loss = out.loss + content_loss_weight * out.content_loss
        return out

    def masked_item_loss(
        self, input_ids: torch.Tensor, labels: torch.Tensor, attribute_loss_weight: float = 0.0,
        content_loss_weight: float = 0.0,
    ) -> SeqRecLoss:
        """Cloze objective: predict the original item at [MASK] positions (labels 0 elsewhere), plus,
        weighted, its attributes and its content vector."""
        states = self.encode(input_ids, causal=False)
        return self._with_extras(states, labels, self._item_loss(states, labels), attribute_loss_weight, content_loss_weight)

    def next_item_loss(
        self,
        input_ids: torch.Tensor,
        labels: torch.Tensor,
        negatives: torch.Tensor | None = None,
        log_q: torch.Tensor | None = None,
        content_loss_weight: float = 0.0,
    ) -> SeqRecLoss:
        """Next-item cross-entropy at every non-padded position (full or sampled softmax), plus,
        weighted, the same targets against the content vectors alone."""
        states = self.encode(input_ids, causal=True)
        return self._with_extras(states, labels, self._item_loss(states, labels, negatives, log_q), 0.0, content_loss_weight)

    def forward(
        self,
        input_ids: torch.Tensor,
        labels: torch.Tensor | None = None,
        causal: bool = True,
        negatives: torch.Tensor | None = None,
        log_q: torch.Tensor | None = None,
        attribute_loss_weight: float = 0.0,
        content_loss_weight: float = 0.0,
    ):
        """Without labels: next-item scores from the last position, (B, L) → (B, N + 2).
        With labels: a `SeqRecLoss` (causal: next-item; bidirectional: masked items and attributes)."""
        if labels is None:
            return self.score_next(input_ids)
        if self.training:
            self.items.draw_id_dropout()
        if causal:
            return self.next_item_loss(input_ids, labels, negatives, log_q, content_loss_weight)
        return self.masked_item_loss(input_ids, labels, attribute_loss_weight, content_loss_weight)

    @torch.no_grad()
    def score_next(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Scores of every item as the user's next one, given right-aligned histories (B, L)."""
        return self.item_logits(self.encode(input_ids, causal=True)[:, -1])

    @torch.no_grad()
    def score_histories(self, histories: list[list[int]]) -> torch.Tensor:
        """Next-item scores for raw item-index histories: the one scoring path that evaluation
        and serving share, so they cannot disagree. (B,) histories → (B, N + 2)."""
        device = self.items.item_attributes.device
        return self.score_next(left_pad(histories, self.config.max_seq_len).to(device))

    @torch.no_grad()
    def user_vectors(self, histories: list[list[int]]) -> torch.Tensor:
        """(B,) raw item-index histories → (B, H) query vectors: score(item) = user · item_vectors()[item],
        the same numbers `score_histories` gives (ANN retrieval searches with these)."""
        device = self.items.item_attributes.device
        return self.encode(left_pad(histories, self.config.max_seq_len).to(device), causal=True)[:, -1]

    @torch.no_grad()
    def item_vectors(self) -> torch.Tensor:
        """(N, H) vectors of the real items 1..N (row i-1 is item index i): what the ANN index holds."""
        return self.items.catalog()[1 : self.config.num_items + 1]
