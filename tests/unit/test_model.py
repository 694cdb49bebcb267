import pytest
import torch

from recsys.models import SeqRecConfig, SeqRecModel
from recsys.models.seqrec import left_pad


def tiny(**kw) -> SeqRecModel:
    torch.manual_seed(0)
    cfg = SeqRecConfig(num_items=40, num_attributes=7, max_attributes_per_item=3, hidden_size=16,
                       num_layers=2, num_heads=2, max_seq_len=6, dropout=0.0, **kw)
    model = SeqRecModel(cfg)
    model.set_item_attributes(torch.randint(0, 8, (42, 3)))
    return model.eval()


def test_left_pad_keeps_most_recent_items_right_aligned():
    out = left_pad([[1, 2, 3], list(range(1, 10)), []], 4)
    assert out.tolist() == [[0, 1, 2, 3], [6, 7, 8, 9], [0, 0, 0, 0]]


def test_scores_cover_all_items_and_never_pad_or_mask():
    model = tiny()
    scores = model.score_histories([[1, 2, 3], [5]])
    assert scores.shape == (2, 42)
    assert torch.isinf(scores[:, 0]).all() and torch.isinf(scores[:, 41]).all()
    assert torch.isfinite(scores[:, 1:41]).all()


def test_causal_encoder_does_not_look_ahead():
    model = tiny()
    a = model.encode(torch.tensor([[1, 2, 3, 4, 5, 6]]), causal=True)
    b = model.encode(torch.tensor([[1, 2, 3, 4, 5, 30]]), causal=True)
    assert torch.allclose(a[:, :5], b[:, :5], atol=1e-6)
    assert not torch.allclose(a[:, 5], b[:, 5])
    c = model.encode(torch.tensor([[1, 2, 3, 4, 5, 30]]), causal=False)
    assert not torch.allclose(b[:, 0], c[:, 0])  # bidirectional: the first position sees the last


def test_attributes_change_item_vectors():
    model = tiny()
    before = model.items(torch.tensor([3])).clone()
    table = model.items.item_attributes.clone()
    table[3] = torch.tensor([1, 2, 0])
    model.set_item_attributes(table)
    assert not torch.allclose(before, model.items(torch.tensor([3])))


def test_losses_are_finite_and_backpropagate():
    model = tiny().train()
    inputs = torch.tensor([[0, 0, 1, 2, 3, 4]])
    labels = torch.tensor([[0, 0, 2, 3, 4, 5]])
    loss = model(inputs, labels=labels, causal=True).loss
    loss.backward()
    assert torch.isfinite(loss) and model.items.id_embedding.weight.grad.abs().sum() > 0
    masked = model(torch.tensor([[0, 0, 1, 41, 3, 41]]), labels=torch.tensor([[0, 0, 0, 2, 0, 4]]), causal=False).loss
    assert torch.isfinite(masked)
    empty = model(inputs, labels=torch.zeros_like(labels), causal=True).loss
    assert empty.item() == 0.0


def test_save_pretrained_roundtrip_is_exact(tmp_path):
    model = tiny()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "config.json").is_file()
    loaded = SeqRecModel.from_pretrained(tmp_path).eval()
    assert loaded.config.num_items == 40
    assert torch.equal(loaded.items.item_attributes, model.items.item_attributes)
    hist = [[1, 2, 3], [7, 8]]
    torch.testing.assert_close(loaded.score_histories(hist), model.score_histories(hist), rtol=0, atol=0)


def test_invalid_config_is_explained():
    import pytest

    with pytest.raises(ValueError, match="divisible by num_heads"):
        SeqRecConfig(hidden_size=10, num_heads=3)


def test_frozen_text_embeddings_change_items_train_only_the_projection_and_round_trip(tmp_path):
    torch.manual_seed(0)
    cfg = SeqRecConfig(num_items=10, num_attributes=0, hidden_size=8, num_layers=1, num_heads=2, max_seq_len=4,
                       dropout=0.0, text_embedding_dim=5)
    model = SeqRecModel(cfg)
    before = model.items(torch.tensor([3])).clone()
    text = torch.randn(12, 5)
    model.set_item_text_embeddings(text)
    assert not torch.allclose(before, model.items(torch.tensor([3])))
    assert "items.item_text" not in dict(model.named_parameters())  # frozen: not trained
    loss = model(torch.tensor([[1, 2, 3]]), labels=torch.tensor([[2, 3, 4]])).loss
    loss.backward()
    assert model.items.text_projection.weight.grad.abs().sum() > 0
    model.save_pretrained(tmp_path)
    again = SeqRecModel.from_pretrained(tmp_path)
    assert torch.equal(again.items.item_text, text)
    with pytest.raises(ValueError, match="shape"):
        model.set_item_text_embeddings(torch.zeros(3, 5))
