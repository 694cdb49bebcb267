"""CTR ranking: P(click | user history, candidate item, context), trained with binary cross-entropy.

The user state comes from the sequential recommender's causal encoder (initialised from the
fine-tuned retrieval model), the candidate from its item table, so ranking and retrieval share one
representation. The head sees [u, v, u⊙v, context] and adds the retrieval dot product u·v, scaled
by a learned factor, as a skip term: at initialisation the ranker orders candidates much as
retrieval does (softmax-trained dot products are large, so the factor starts small to keep the
probabilities calibrated), and training learns what retrieval misses (context: hour, weekday,
position in the session).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from recsys.models.seqrec.configuration_seqrec import SeqRecConfig
from recsys.models.seqrec.modeling_seqrec import SeqRecModel, left_pad

# Context feature vocabularies: hour of day, day of week, impression position in the session (capped).
CONTEXT_SIZES = {"hour": 24, "weekday": 7, "session_position": 16}


@dataclass
class CTROutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # (B,) log-odds of a click
    retrieval_scores: torch.Tensor | None = None  # (B,) u·v, the retrieval model's own score (a baseline)


class SeqRecForCTR(PreTrainedModel):
    config_class = SeqRecConfig
    base_model_prefix = "seqrec"
    main_input_name = "input_ids"

    def __init__(self, config: SeqRecConfig):
        super().__init__(config)
        self.seqrec = SeqRecModel(config)
        h = config.hidden_size
        self.context = nn.ModuleDict({name: nn.Embedding(size, h) for name, size in CONTEXT_SIZES.items()})
        self.head = nn.Sequential(
            nn.Linear(4 * h, h), nn.GELU(), nn.Dropout(config.dropout), nn.Linear(h, 1)
        )
        self.dot_scale = nn.Parameter(torch.full((1,), 0.1))  # 1-d: DeepSpeed cannot broadcast 0-d tensors
        # optional click bias per item (config.ctr_item_bias): what an ad's own creative adds, learned from its clicks
        self.item_bias = nn.Embedding(config.num_items + 2, 1) if config.ctr_item_bias else None
        self.post_init()
        if self.item_bias is not None:
            nn.init.zeros_(self.item_bias.weight)  # starts as the model without it

    def _init_weights(self, module: nn.Module) -> None:
        SeqRecModel._init_weights(self, module)

    @classmethod
    def from_retrieval_model(cls, path, item_bias: bool = False) -> SeqRecForCTR:
        """A CTR model whose encoder and item table start as the fine-tuned retrieval model's."""
        base = SeqRecModel.from_pretrained(path)
        config = base.config
        if item_bias:
            config = SeqRecConfig(**{**base.config.to_dict(), "ctr_item_bias": True})
        model = cls(config)
        model.seqrec.load_state_dict(base.state_dict())
        return model

    def forward(
        self,
        input_ids: torch.Tensor,
        candidates: torch.Tensor,
        context: torch.Tensor,
        labels: torch.Tensor | None = None,
    ) -> CTROutput:
        """(B, L) right-aligned histories, (B,) candidate item indices, (B, 3) context codes
        [hour, weekday, session_position] → click log-odds; with (B,) 0/1 labels, the mean BCE."""
        u = self.seqrec.encode(input_ids, causal=True)[:, -1]
        logits, dot = self._logits(u, self.seqrec.items(candidates), context, self._bias(candidates))
        loss = None if labels is None else F.binary_cross_entropy_with_logits(logits, labels.float())
        return CTROutput(loss=loss, logits=logits, retrieval_scores=dot)

    def _bias(self, candidates: torch.Tensor | None) -> torch.Tensor | None:
        return None if self.item_bias is None or candidates is None else self.item_bias(candidates).squeeze(-1)

    def _logits(self, u: torch.Tensor, v: torch.Tensor, context: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        c = sum(
            emb(context[..., i].clamp(0, size - 1))
            for i, (size, emb) in enumerate(zip(CONTEXT_SIZES.values(), self.context.values(), strict=True))
        )
        dot = (u * v).sum(-1)
        logits = self.head(torch.cat([u, v, u * v, c], dim=-1)).squeeze(-1) + self.dot_scale * dot
        return (logits if bias is None else logits + bias), dot

    @torch.no_grad()
    def rank(self, histories: list[list[int]], candidates: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Click log-odds of many candidates per history with one encoder pass per history:
        (B,) histories, (B, C) candidate indices, (B, 3) context → (B, C). Equal to `forward`'s
        logits for each (history, candidate) pair; serving ranks with this."""
        device = self.seqrec.items.item_attributes.device
        candidates = torch.as_tensor(candidates, device=device)
        context = torch.as_tensor(context, device=device)[:, None, :].expand(-1, candidates.shape[1], -1)
        return self.rank_states(self.user_states(histories), self.seqrec.items(candidates), context, candidates)

    @torch.no_grad()
    def rank_vectors(self, histories: list[list[int]], v: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """`rank` with the candidates given as item vectors (B, C, H): items added after training
        (serving's cold start) have a vector but no row in the item table."""
        device = self.seqrec.items.item_attributes.device
        u = self.seqrec.encode(left_pad(histories, self.config.max_seq_len).to(device), causal=True)[:, -1]
        v = torch.as_tensor(v, device=device)
        context = torch.as_tensor(context, device=device)[:, None, :].expand(-1, v.shape[1], -1)
        return self._logits(u[:, None, :].expand_as(v), v, context)[0]

    @torch.no_grad()
    def user_states(self, histories: list[list[int]]) -> torch.Tensor:
        """(B, H) the encoder's state after each history: what `rank_states` scores candidates for."""
        device = self.seqrec.items.item_attributes.device
        return self.seqrec.encode(left_pad(histories, self.config.max_seq_len).to(device), causal=True)[:, -1]

    @torch.no_grad()
    def rank_states(self, u: torch.Tensor, v: torch.Tensor, context: torch.Tensor, candidates: torch.Tensor | None = None) -> torch.Tensor:
        """Click log-odds of (B, C, H) candidate vectors for (B, H) user states in (B, C, 3) contexts:
        one encoder pass serves many contexts (the ad auction scores every slot). `candidates`
        (B, C): their item indices, for the item bias when the model has one."""
        return self._logits(u[:, None, :].expand_as(v), v, context, self._bias(candidates))[0]

    @torch.no_grad()
    def score(self, histories: list[list[int]], candidates, context) -> CTROutput:
        """Scores for raw item-index histories: the scoring path evaluation and serving share."""
        device = self.seqrec.items.item_attributes.device
        inputs = left_pad(histories, self.config.max_seq_len).to(device)
        return self(inputs, torch.as_tensor(candidates, device=device), torch.as_tensor(context, device=device))

    def click_probability(self, histories: list[list[int]], candidates, context) -> torch.Tensor:
        """P(click) for raw item-index histories."""
        return torch.sigmoid(self.score(histories, candidates, context).logits)
