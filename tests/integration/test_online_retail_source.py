"""Online Retail through the real prepare pipeline (Ray Data): the dataset manifest reports the raw
log's own quarantine by reason, and every raw line is accounted for."""

from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def test_online_retail_prepares_with_its_quarantine_by_reason(ray_session, shared_datasets, tmp_path):
    from recsys import stages
    from recsys.config import load_config

    cfg = load_config(REPO / "configs" / "online-retail.yaml",
                      [f"artifacts.root={tmp_path}", f"data.online_retail_dir={shared_datasets / 'online-retail'}"])
    dataset = stages.prepare(cfg)
    m = dataset.manifest
    source = m["source_quarantine"]
    assert source["raw_lines"] == 541_909
    assert source["purchase_lines"] + sum(source["quarantined_by_reason"].values()) == source["raw_lines"]
    assert source["events"] == source["purchase_lines"] - source["merged_lines"] == m["counts"]["events_read"]
    assert m["counts"]["events_valid"] + m["counts"]["quarantined"] == m["counts"]["events_read"]
    assert m["split"]["protocol"] == "time" and m["split"]["valid_cutoff"].startswith("2011-10-01")
    assert m["vocab"]["source"] == "train side of the time split" and m["vocab"]["num_items"] > 3_000
    assert min(m["counts"][f"{s}_rows"] for s in ("train", "valid", "test")) > 500
