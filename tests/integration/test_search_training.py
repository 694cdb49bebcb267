"""The search encoder's contrastive fine-tuning on Ray Train (ZeRO-2, 2 workers) on the tiny shop."""

import pytest

pytestmark = pytest.mark.integration


def test_fine_tuning_improves_validation_retrieval(tiny_run, search_encoder, monkeypatch):
    import torch

    from recsys.search.encoder import TextEncoder
    from recsys.search.engine import SearchIndex, SearchWeights, evaluate_search
    from recsys.search.train import search_pairs

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing may come from a hub
    torch.set_num_threads(2)
    items = tiny_run.dataset.items().to_dict("records")
    valid = search_pairs(tiny_run.dataset, "valid") + search_pairs(tiny_run.dataset, "test")
    assert len(valid) >= 20

    def quality(encoder) -> dict:
        index = SearchIndex.from_items(items, encoder, SearchWeights())
        return evaluate_search(index, valid, variants=("dense",))["dense"]

    before = quality(TextEncoder())
    exported = search_encoder.model_path
    after = quality(TextEncoder(exported))
    print(f"search fine-tuning on {len(valid)} held-out searches: before {before} after {after}")
    assert (exported / "model.safetensors").is_file() and (exported / "tokenizer.json").is_file()
    assert after["mrr"] > before["mrr"] and after["recall@10"] >= before["recall@10"]
