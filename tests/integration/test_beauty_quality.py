"""End to end on the real Amazon Beauty data with the demo config (slow: about 8 minutes)."""

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

POPREC_HR10 = 0.0152  # S3-Rec paper, full ranking on the same file


def test_demo_recipe_beats_poprec_on_beauty(ray_session, beauty_dir, tmp_path):
    from recsys import stages
    from recsys.config import load_config
    from tests.conftest import REPO

    cfg = load_config(REPO / "configs" / "demo.yaml", [f"artifacts.root={tmp_path}", f"data.beauty_dir={beauty_dir}", "data.source=beauty"])
    dataset = stages.prepare(cfg)
    assert dataset.manifest["counts"]["users"] == 22_363 and dataset.num_items == 12_101
    pre = stages.pretrain(cfg, dataset)
    fine = stages.finetune(cfg, dataset, init_from=pre.model_path if pre else None)
    report = stages.evaluate(cfg, fine.model_path)
    hr10 = report["metrics"]["model"]["hr@10"]
    print(f"Beauty HR@10 {hr10:.4f} NDCG@10 {report['metrics']['model']['ndcg@10']:.4f}")
    assert report["users"] == 22_363
    assert hr10 > POPREC_HR10
    assert hr10 > report["metrics"]["popularity"]["hr@10"]
