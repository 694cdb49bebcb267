"""Configuration of the sequential recommender (saved as config.json beside the weights)."""

from __future__ import annotations

from transformers import PretrainedConfig


class SeqRecConfig(PretrainedConfig):
    """A transformer encoder over item sequences.

    Item indices: 0 is padding, 1..num_items are catalog items, num_items + 1 is [MASK].
    Attribute indices: 0 is padding, 1..num_attributes are attribute values.
    Item vector = id embedding + mean attribute embedding (+ projected frozen text embedding).
    """

    model_type = "recsys-seqrec"

    def __init__(
        self,
        num_items: int = 100,
        num_attributes: int = 0,
        max_attributes_per_item: int = 8,
        hidden_size: int = 64,
        num_layers: int = 2,
        num_heads: int = 2,
        intermediate_size: int | None = None,
        dropout: float = 0.2,
        max_seq_len: int = 50,
        attribute_embeddings: bool = True,
        text_embedding_dim: int = 0,
        text_encoder: str | None = None,
        text_max_tokens: int = 48,
        id_dropout: float = 0.0,
        item_ids: bool = True,
        ctr_item_bias: bool = False,
        initializer_range: float = 0.02,
        **kwargs,
    ):
        problems = []
        if num_items < 1:
            problems.append(f"num_items must be ≥ 1, got {num_items}")
        if hidden_size % num_heads:
            problems.append(f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads})")
        if not 0 <= dropout < 1:
            problems.append(f"dropout must be in [0, 1), got {dropout}")
        if text_embedding_dim < 0:
            problems.append(f"text_embedding_dim must be ≥ 0 (0 = no text embeddings), got {text_embedding_dim}")
        if not 0 <= id_dropout < 1:
            problems.append(f"id_dropout must be in [0, 1), got {id_dropout}")
        if (not item_ids or id_dropout) and not ((attribute_embeddings and num_attributes > 0) or text_embedding_dim > 0):
            problems.append("item_ids=False or id_dropout > 0 needs item content: attribute embeddings with "
                            "num_attributes > 0, or text_embedding_dim > 0")
        if max_seq_len < 1:
            problems.append(f"max_seq_len must be ≥ 1, got {max_seq_len}")
        if problems:
            raise ValueError("invalid SeqRecConfig: " + "; ".join(problems))
        self.num_items = num_items
        self.num_attributes = num_attributes
        self.max_attributes_per_item = max_attributes_per_item
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.intermediate_size = intermediate_size or 4 * hidden_size
        self.dropout = dropout
        self.max_seq_len = max_seq_len
        self.attribute_embeddings = attribute_embeddings and num_attributes > 0
        # > 0: every item also carries a frozen text vector of this size (e.g. a sentence encoder's
        # embedding of title + category + brand), projected into the hidden size and added.
        self.text_embedding_dim = text_embedding_dim
        # The encoder those text vectors come from and how many tokens it reads: a new item's text
        # must be embedded the same way at serving time (recsys.online.cold_start).
        self.text_encoder = text_encoder
        self.text_max_tokens = text_max_tokens
        # Training only: each forward pass leaves this share of items' id embeddings out (DropoutNet,
        # Volkovs et al. 2017), so content vectors alone rank well — what a cold item has.
        self.id_dropout = id_dropout
        # False: no per-item id vector (only [MASK] keeps one); items are their content alone.
        self.item_ids = item_ids
        self.ctr_item_bias = ctr_item_bias  # SeqRecForCTR: a learned click bias per item (the ad pCTR model's creative quality)
        self.initializer_range = initializer_range
        super().__init__(**kwargs)

    @property
    def pad_index(self) -> int:
        return 0

    @property
    def mask_index(self) -> int:
        return self.num_items + 1
