"""Online Retail through the real prepare pipeline (Ray Data): the dataset manifest reports the raw
log's own quarantine by reason, every raw line is accounted for, the products launched after the
cut are kept as cold targets, and a cold product's served score is the offline evaluation's."""

from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def retail(ray_session, tmp_path_factory):
    from recsys import stages
    from recsys.config import load_config

    shared_datasets = REPO.parent / "shared" / "datasets"
    if not (shared_datasets / "online-retail" / "online_retail.parquet").is_file():
        pytest.skip(f"Online Retail not found under {shared_datasets} (../shared/datasets is absent on this machine)")
    cfg = load_config(REPO / "configs" / "online-retail.yaml",
                      [f"artifacts.root={tmp_path_factory.mktemp('retail')}", f"data.online_retail_dir={shared_datasets / 'online-retail'}",
                       "model.hidden_size=16", "model.num_layers=1", "pretrain.enabled=false", "finetune.epochs=1",
                       "finetune.batch_size=256", "search.enabled=false", "serve.exclude_history=false"])
    return cfg, stages.prepare(cfg)


def test_online_retail_prepares_with_its_quarantine_by_reason(retail):
    _, dataset = retail
    m = dataset.manifest
    source = m["source_quarantine"]
    assert source["raw_lines"] == 541_909
    assert source["purchase_lines"] + sum(source["quarantined_by_reason"].values()) == source["raw_lines"]
    assert source["events"] == source["purchase_lines"] - source["merged_lines"] == m["counts"]["events_read"]
    assert m["counts"]["events_valid"] + m["counts"]["quarantined"] == m["counts"]["events_read"]
    assert m["split"]["protocol"] == "time" and m["split"]["valid_cutoff"].startswith("2011-10-01")
    assert m["vocab"]["source"] == "train side of the time split" and m["vocab"]["num_items"] > 3_000
    assert min(m["counts"][f"{s}_rows"] for s in ("train", "valid", "test")) > 500


def test_products_launched_after_the_cut_are_cold_targets(retail):
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    _, dataset = retail
    vocab, cold = set(dataset.items()["item_id"]), dataset.cold_items()
    assert len(cold) > 50 and vocab.isdisjoint(cold["item_id"])
    assert cold["item_index"].tolist() == list(range(dataset.num_items + 2, dataset.num_items + 2 + len(cold)))
    events = pq.read_table(dataset.split_dir("events"), columns=["item_id", "timestamp"])
    sold = events.filter(pc.is_in(events["item_id"], value_set=pa.array(cold["item_id"].tolist())))
    assert int(pc.min(sold["timestamp"].cast("int64")).as_py()) >= dataset.manifest["split"]["valid_cutoff_ms"]
    test = dataset.cold_targets("test")
    assert len(test) == dataset.manifest["counts"]["cold_targets"]["test"] > 100
    index_of = dict(zip(cold["item_id"], cold["item_index"], strict=True))
    assert all(index_of[i] == t for i, t in zip(test["target_id"], test["target"], strict=True))
    assert all(np.asarray(h).max() <= dataset.num_items for h in test["history"])  # histories: known items only


def test_a_cold_products_served_score_is_the_offline_evaluations(retail):
    """POST /items with a cold product's catalog row gives it the score offline evaluation ranked it by."""
    import torch

    from recsys import stages
    from recsys.eval.segments import cold_text_for, model_scorer
    from recsys.models import SeqRecModel
    from recsys.online.engine import EngineSpec, OnlineEngine

    cfg, dataset = retail
    fine = stages.finetune(cfg, dataset)
    engine = OnlineEngine(stages.index(cfg, fine.model_path), EngineSpec.of(cfg))
    model = SeqRecModel.from_pretrained(fine.model_path).eval()
    row = dataset.cold_targets("test").iloc[0]
    history = [int(i) for i in row["history"]][-model.config.max_seq_len:]
    offline = model_scorer(model, dataset, cold_text_for(cfg, model, dataset), cfg.data.max_attributes_per_item)([history])[0]

    cold = dataset.cold_items().set_index("item_index")
    picked = list(dict.fromkeys([int(row["target"]), *cold.index[:2]]))  # the target may be one of the first two
    ids = {v: k for k, v in engine.catalog.index_of.items()}
    for index in picked:
        item = cold.loc[index]
        info = engine.add_item({"item_id": item["item_id"], "title": item["title"]})
        assert info["recommendable"], info
    state = engine.user_state(None, [ids[i] for i in history], [], 0)
    answer = engine.rank(state, [cold.loc[i, "item_id"] for i in picked])
    served = {engine.item(s.index)["item_id"]: s.retrieval_score for s in answer.items}
    for index in picked:
        assert served[cold.loc[index, "item_id"]] == pytest.approx(float(offline[index]), abs=1e-4)
    assert torch.isfinite(offline[dataset.num_items + 2:]).all()  # every cold product has a score offline


def test_weekly_sales_count_guest_sales_and_net_cancellations_on_the_real_log(retail):
    """Demand series from the raw lines (recsys.forecast.series): every sale line counted, guests
    included; the 74,215-unit order of 18 Jan 2011, cancelled minutes later by the same customer,
    nets to nothing; the log's partial first and last weeks are left out."""
    import pandas as pd

    from recsys.forecast.stage import load_sales

    cfg, dataset = retail
    series, static = load_sales(cfg, dataset)
    source, r = dataset.manifest["source_quarantine"], series.report
    assert r["sale_lines"] == source["purchase_lines"] + source["quarantined_by_reason"]["no_customer"]
    assert r["guest_sale_lines"] == source["quarantined_by_reason"]["no_customer"]
    assert r["first_period"] == "2010-12-06" and r["last_period"] == "2011-11-28" and r["periods"] == 52
    assert r["cancellation_lines_linked"] > 0.8 * r["cancellation_lines"] and r["refused"]["non_positive_quantity"] == 0
    jar = series.frame[(series.frame["unique_id"] == "23166") & (series.frame["ds"] == pd.Timestamp("2011-01-17"))]
    assert jar["y"].iloc[0] < 1_000  # without netting, that week alone would hold 74,215 units
    per_product = series.frame.groupby("unique_id")["ds"].agg(["min", "max", "size"])
    assert (per_product["max"] == pd.Timestamp("2011-11-28")).all()  # every series runs to the last whole week
    assert ((per_product["max"] - per_product["min"]).dt.days // 7 + 1 == per_product["size"]).all()  # zeros filled
    assert set(static["unique_id"]) >= set(series.frame["unique_id"]) and (static["price"] > 0).all()
