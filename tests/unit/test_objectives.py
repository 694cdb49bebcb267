"""Training objectives on tiny data: masked items + attributes, sampled softmax with log-Q, CTR BCE."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from recsys.models import SeqRecConfig, SeqRecForCTR, SeqRecModel
from recsys.train.batches import masked_item_batch

N_ITEMS, N_ATTRS = 30, 9


def tiny(cls=SeqRecModel, **kw):
    torch.manual_seed(0)
    cfg = SeqRecConfig(num_items=N_ITEMS, num_attributes=N_ATTRS, max_attributes_per_item=2, hidden_size=16,
                       num_layers=1, num_heads=2, max_seq_len=8, dropout=0.0, **kw)
    model = cls(cfg)
    table = torch.zeros(N_ITEMS + 2, 2, dtype=torch.long)
    table[1:N_ITEMS + 1, 0] = torch.arange(N_ITEMS) % N_ATTRS + 1  # item i has attribute i mod 9 (+1)
    (model.seqrec if cls is SeqRecForCTR else model).set_item_attributes(table)
    return model


def test_masked_losses_use_masked_positions_only():
    model = tiny().eval()
    inputs = torch.tensor([[1, 2, 31, 4, 5, 31]])
    labels = torch.tensor([[0, 0, 3, 0, 0, 6]])
    out = model(inputs, labels=labels, causal=False, attribute_loss_weight=0.5)
    states = model.encode(inputs, causal=False)
    logits = model.item_logits(states[0, [2, 5]])
    assert out.item_loss.item() == pytest.approx(F.cross_entropy(logits, torch.tensor([3, 6])).item(), rel=1e-5)
    # Attributes of items 3 and 6 (indices 3 and 6 in the 1-based attribute table) are the only positives.
    attr_logits = (states[0, [2, 5]] @ model.items.attribute_embedding.weight.T)[:, 1:]
    target = torch.zeros(2, N_ATTRS)
    target[0, 2], target[1, 5] = 1.0, 1.0
    expected = F.binary_cross_entropy_with_logits(attr_logits, target)
    assert out.attribute_loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert out.loss.item() == pytest.approx(out.item_loss.item() + 0.5 * expected.item(), rel=1e-5)
    # Unlabelled positions carry no gradient into the loss.
    states = model.encode(inputs, causal=False).detach().requires_grad_(True)
    model._item_loss(states, labels).backward()
    assert states.grad[0, [0, 1, 3, 4]].abs().sum() == 0 and states.grad[0, [2, 5]].abs().sum() > 0


def test_masked_item_and_attribute_losses_fall_on_tiny_data():
    model = tiny().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    rng = np.random.default_rng(0)
    histories = [[(s + i) % N_ITEMS + 1 for i in range(8)] for s in range(N_ITEMS)]  # a cyclic catalog walk
    first = last = None
    for _ in range(150):
        inputs, labels = masked_item_batch(histories, 8, 0.3, N_ITEMS + 1, rng)
        out = model(inputs, labels=labels, causal=False, attribute_loss_weight=1.0)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        parts = (out.item_loss.item(), out.attribute_loss.item())
        first = first or parts
        last = parts
    assert last[0] < 0.4 * first[0] and last[1] < 0.6 * first[1], (first, last)


def test_sampled_softmax_with_all_items_and_uniform_q_is_the_full_softmax():
    model = tiny().eval()
    inputs, labels = torch.tensor([[0, 1, 2, 3]]), torch.tensor([[0, 2, 3, 4]])
    full = model(inputs, labels=labels).loss
    everything = torch.arange(1, N_ITEMS + 1)
    log_q = torch.full((N_ITEMS + 2,), math.log(0.5))  # any constant cancels
    sampled = model(inputs, labels=labels, negatives=everything, log_q=log_q).loss
    assert sampled.item() == pytest.approx(full.item(), rel=1e-5)


def test_sampled_softmax_subtracts_log_q_and_masks_the_target():
    model = tiny().eval()
    inputs, labels = torch.tensor([[1, 2, 3]]), torch.tensor([[0, 0, 7]])
    negatives = torch.tensor([7, 9, 11])  # 7 is the target: an accidental hit, masked
    log_q = torch.log(torch.linspace(0.01, 1.0, N_ITEMS + 2))
    loss = model(inputs, labels=labels, negatives=negatives, log_q=log_q).loss
    s = model.encode(inputs, causal=True)[0, 2]
    cat = model.items.catalog()
    logits = torch.stack([s @ cat[7] - log_q[7], s @ cat[9] - log_q[9], s @ cat[11] - log_q[11]])
    assert loss.item() == pytest.approx(F.cross_entropy(logits[None], torch.tensor([0])).item(), rel=1e-5)
    with pytest.raises(ValueError, match="log_q"):
        model(inputs, labels=labels, negatives=negatives)


def test_ctr_loss_is_binary_cross_entropy_and_learns_clicks():
    model = tiny(SeqRecForCTR).train()
    rng = np.random.default_rng(1)
    hist = torch.tensor(rng.integers(1, N_ITEMS + 1, size=(64, 8)))
    cand = torch.tensor(rng.integers(1, N_ITEMS + 1, size=64))
    ctx = torch.tensor(np.stack([rng.integers(0, 24, 64), rng.integers(0, 7, 64), rng.integers(0, 4, 64)], 1))
    y = ((cand % 2 == 0) ^ (ctx[:, 1] >= 5)).long()  # clicks depend on the item and the weekday
    out = model(hist, cand, ctx, labels=y)
    p = torch.sigmoid(out.logits)
    manual = -(y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()
    assert out.loss.item() == pytest.approx(manual.item(), rel=1e-5)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    first = out.loss.item()
    for _ in range(150):
        loss = model(hist, cand, ctx, labels=y).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.3 * first, (first, loss.item())


def test_ctr_model_starts_from_the_retrieval_model(tmp_path):
    base = tiny()
    base.save_pretrained(tmp_path)
    ctr = SeqRecForCTR.from_retrieval_model(tmp_path).eval()
    for name, value in base.state_dict().items():
        assert torch.equal(ctr.seqrec.state_dict()[name], value), name
    p = ctr.click_probability([[1, 2], []], [3, 4], [[1, 2, 0], [5, 6, 30]])
    assert p.shape == (2,) and ((p > 0) & (p < 1)).all()
    ctr.save_pretrained(tmp_path / "ctr")
    again = SeqRecForCTR.from_pretrained(tmp_path / "ctr").eval()
    assert torch.allclose(again.click_probability([[1, 2]], [3], [[1, 2, 0]]), p[:1])


def test_content_loss_finds_the_target_by_its_content_vector_alone():
    model = tiny(text_embedding_dim=4).eval()
    model.set_item_text_embeddings(torch.randn(N_ITEMS + 2, 4))
    inputs, labels = torch.tensor([[1, 2, 3, 4]]), torch.tensor([[2, 3, 4, 5]])
    out = model(inputs, labels=labels, causal=True, content_loss_weight=0.5)
    states = model.encode(inputs, causal=True)[0]
    content = model.items.content(model.items.item_attributes, model.items.item_text)  # no id embedding
    logits = states @ content.T
    logits[:, [0, N_ITEMS + 1]] = float("-inf")
    expected = F.cross_entropy(logits, labels[0])
    assert out.content_loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert out.loss.item() == pytest.approx(out.item_loss.item() + 0.5 * expected.item(), rel=1e-5)
    # the id embeddings get no gradient from it: only what a cold item also has is trained
    model.zero_grad()
    model._content_loss(model.encode(inputs, causal=True), labels).backward()
    assert model.items.id_embedding.weight.grad[5:].abs().sum() == 0  # items 5.. never in the input
    assert model.items.text_projection.weight.grad.abs().sum() > 0
    masked = model(torch.tensor([[1, N_ITEMS + 1, 3]]), labels=torch.tensor([[0, 2, 0]]), causal=False, content_loss_weight=1.0)
    assert masked.content_loss is not None and masked.attribute_loss is None
    with pytest.raises(ValueError, match="content_loss_weight > 0 needs"):
        tiny(attribute_embeddings=False)(inputs, labels=labels, causal=True, content_loss_weight=1.0)
