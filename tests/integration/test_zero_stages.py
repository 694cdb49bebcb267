"""Every ZeRO stage the config allows trains and exports a loadable model (slow: one fit each)."""

import pytest
import yaml

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.parametrize("zero_stage", [0, 1, 3])
def test_zero_stage_trains_and_exports(ray_session, tmp_path, zero_stage):
    from recsys import stages
    from recsys.config import load_config
    from recsys.models import SeqRecModel
    from tests.integration.conftest import tiny_config_dict

    raw = tiny_config_dict(tmp_path)
    raw["pretrain"]["enabled"] = False
    raw["finetune"].update(epochs=2, zero_stage=zero_stage)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    cfg = load_config(path)
    result = stages.finetune(cfg, stages.prepare(cfg))
    losses = [h["loss"] for h in result.metrics["history"]]
    assert result.metrics["zero_stage"] == zero_stage
    assert losses[1] < losses[0], losses
    model = SeqRecModel.from_pretrained(result.model_path)
    assert model.score_histories([[1, 2, 3]]).isfinite().sum() == cfg.data.synthetic.num_items
