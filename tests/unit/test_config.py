from pathlib import Path

import pytest

from recsys.config import ConfigError, load_config, validate_config

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["demo.yaml", "beauty.yaml"])
def test_shipped_configs_load(name):
    cfg = load_config(REPO / "configs" / name)
    assert cfg.finetune.zero_stage in (0, 1, 2, 3)
    assert cfg.model.hidden_size % cfg.model.num_heads == 0


def write(tmp_path, text):
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def test_unknown_key_names_file_field_and_allowed_keys(tmp_path):
    path = write(tmp_path, "finetune:\n  epoch: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert str(path) in msg
    assert "finetune.epoch: unknown key" in msg
    assert "epochs" in msg  # the allowed keys are listed


def test_bad_value_names_field_and_what_is_allowed(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "pretrain:\n  zero_stage: 5\n"))
    assert "pretrain.zero_stage" in str(err.value)
    assert "0, 1, 2 or 3" in str(err.value)
    assert "got 5" in str(err.value)


def test_cross_field_rule_is_explained():
    with pytest.raises(ConfigError, match=r"model: hidden_size \(30\) must be divisible by num_heads \(4\)"):
        validate_config({"model": {"hidden_size": 30, "num_heads": 4}})


def test_parquet_source_requires_paths():
    with pytest.raises(ConfigError, match="data.events_path and data.catalog_path"):
        validate_config({"data": {"source": "files"}})


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "data: [unclosed\n"))
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))


def test_overrides_are_validated_like_the_file(tmp_path):
    path = write(tmp_path, "finetune:\n  epochs: 3\n")
    assert load_config(path, ["finetune.epochs=7"]).finetune.epochs == 7
    with pytest.raises(ConfigError, match="finetune.epochs"):
        load_config(path, ["finetune.epochs=-1"])
    with pytest.raises(ConfigError, match="expected dotted.key=value"):
        load_config(path, ["finetune.epochs"])
