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


def test_adaptation_on_catalog_pseudo_queries_records_its_safeguard(tiny_run):
    """The search stage's adaptation (no logged queries used) on the tiny shop's catalog, under its
    own run name: the export records the held-out comparison, and the index uses it only if it won."""
    from recsys.config import load_config
    from recsys.search.adapt import SOURCE, adapt_encoder
    from recsys.search.encoder import pretrained_path
    from recsys.search.examples import encoder_for

    cfg = load_config(tiny_run.config_path, ["run_name=it-adapt", "search.adapt.enabled=true", "search.train.epochs=1"])
    result = adapt_encoder(cfg, tiny_run.dataset)
    extra = result.export.meta.extra
    guard = extra["safeguard"]
    assert extra["source"] == SOURCE and extra["pairs"] > 0 and guard["held_out_queries"] >= 4 and guard["held_out_items"] >= 4
    assert 0 < guard["pretrained"] <= 1 and 0 < guard["adapted"] <= 1
    assert guard["ship"] == (guard["adapted"] >= guard["pretrained"])
    path, source = encoder_for(cfg, tiny_run.dataset)
    assert (path, source) == ((result.model_path, "adapted") if guard["ship"] else (pretrained_path(), "pretrained"))
