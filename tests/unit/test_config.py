import re
from pathlib import Path

import pytest

from recsys.config import (
    ConfigError,
    CtrConfig,
    FinetuneConfig,
    PretrainConfig,
    RecsysConfig,
    SearchTrainConfig,
    TrainStageConfig,
    load_config,
    training_stage_sections,
    validate_config,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["demo.yaml", "beauty.yaml", "large-gpu.yaml"])
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


# Every training stage section → its class, found by walking RecsysConfig (a new stage joins by itself).
STAGES = training_stage_sections()


def nested(section: str, body: dict) -> dict:
    """{"search.train": body} → {"search": {"train": body}}."""
    for part in reversed(section.split(".")):
        body = {part: body}
    return body


def test_each_training_stage_has_its_own_class():
    assert {"pretrain": PretrainConfig, "finetune": FinetuneConfig, "ctr": CtrConfig,
            "search.train": SearchTrainConfig}.items() <= STAGES.items()
    assert all(issubclass(cls, TrainStageConfig) for cls in STAGES.values())
    assert len(set(STAGES.values())) == len(STAGES)  # no two stages share a class


def foreign_keys(section: str) -> list[str]:
    """Settings some other stage defines and this one does not."""
    own = set(STAGES[section].model_fields)
    return sorted({k for name, cls in STAGES.items() if name != section for k in cls.model_fields} - own)


@pytest.mark.parametrize("section", list(STAGES))
def test_another_stages_setting_is_refused_naming_stage_and_setting(section):
    keys = foreign_keys(section)
    assert keys, f"{section} refuses no other stage's setting: the test would prove nothing"
    for key in keys:
        owners = [name for name, cls in STAGES.items() if key in cls.model_fields]
        value = STAGES[owners[0]].model_fields[key].default  # a value that is valid where it belongs
        with pytest.raises(ConfigError) as err:
            validate_config(nested(section, {key: value}))
        msg = str(err.value)
        assert f"{section}.{key}: not a setting of the {section} stage" in msg, msg
        named = re.search(r"\(it is a (.+?) setting", msg)
        assert named and re.split(r", | and ", named.group(1)) == owners, msg
        allowed = msg.split("allowed keys here: ", 1)[1].split(";")[0].strip()
        assert allowed.split(", ") == sorted(STAGES[section].model_fields), msg


def test_override_of_another_stages_setting_names_both_stages():
    with pytest.raises(ConfigError) as err:
        load_config(REPO / "configs" / "demo.yaml", ["ctr.mask_prob=0.3"])
    assert "ctr.mask_prob: not a setting of the ctr stage (it is a pretrain setting); allowed keys here: " in str(err.value)
    with pytest.raises(ConfigError, match=r"finetune\.enabled: .*the finetune stage always runs"):
        validate_config({"finetune": {"enabled": False}})
    with pytest.raises(ConfigError, match=r"search\.train\.enabled: .*search\.enabled turns the search stage"):
        validate_config({"search": {"train": {"enabled": False}}})


def test_a_key_no_stage_defines_is_still_an_unknown_key():
    with pytest.raises(ConfigError, match=r"ctr\.epoch: unknown key; allowed keys here: batch_size, "):
        validate_config({"ctr": {"epoch": 3}})


@pytest.mark.parametrize("section", list(STAGES))
def test_each_stage_accepts_its_own_settings(section):
    cls = STAGES[section]
    body = {k: f.get_default(call_default_factory=True) for k, f in cls.model_fields.items()}
    body["seed"] = 7
    node = validate_config(nested(section, body))
    for part in section.split("."):
        node = getattr(node, part)
    assert type(node) is cls
    assert node.model_dump() == body


def test_stage_defaults_are_kept():
    cfg = RecsysConfig()
    shared = {"batch_size": 128, "gradient_accumulation_steps": 1, "lr": 1e-3, "lr_schedule": "cosine",
              "warmup_ratio": 0.05, "min_lr_ratio": 0.1, "weight_decay": 0.0, "grad_clip": 1.0, "zero_stage": 2, "seed": 42}
    assert cfg.pretrain.model_dump() == {**shared, "epochs": 5, "enabled": True, "mask_prob": 0.2,
                                         "attribute_loss_weight": 0.0, "content_loss_weight": 0.0, "pool_with": []}
    assert cfg.finetune.model_dump() == {**shared, "epochs": 10, "select_best": True, "early_stopping_patience": 0,
                                         "loss": "full_softmax", "num_negatives": 1024,
                                         "negative_sampling_power": 0.75, "content_loss_weight": 0.0}
    assert cfg.ctr.model_dump() == {**shared, "epochs": 3, "lr": 5e-4, "enabled": False, "select_best": True,
                                    "early_stopping_patience": 0}
    assert cfg.search.train.model_dump() == {**shared, "epochs": 2, "batch_size": 64, "lr": 3e-5, "warmup_ratio": 0.1}
    # A section that sets one key keeps the stage's other defaults (not the generic ones).
    partial = validate_config({"ctr": {"batch_size": 32}, "search": {"train": {"epochs": 1}}})
    assert (partial.ctr.enabled, partial.ctr.epochs, partial.ctr.lr) == (False, 3, 5e-4)
    assert (partial.search.train.batch_size, partial.search.train.lr, partial.search.train.warmup_ratio) == (64, 3e-5, 0.1)


@pytest.mark.parametrize("section", ["finetune", "ctr"])
def test_patience_needs_select_best(section):
    with pytest.raises(ConfigError, match=rf"{section}: early_stopping_patience needs select_best: true"):
        validate_config({section: {"select_best": False, "early_stopping_patience": 2}})


def test_a_content_loss_without_item_content_is_refused_at_load():
    with pytest.raises(ConfigError, match="finetune.content_loss_weight > 0 needs model.attribute_embeddings or model.text_features"):
        validate_config({"model": {"attribute_embeddings": False}, "finetune": {"content_loss_weight": 1.0}})


def test_autoscaling_look_back_window_shorter_than_serves_metrics_interval_is_refused():
    """Serve averages replicas' metrics, pushed every 10 s, over the look-back window: a shorter window
    only warns in Ray 2.60 and will raise later, so the config refuses it at load, naming the field."""
    with pytest.raises(ConfigError, match=r"serve.autoscaling.look_back_period_s.*10"):
        validate_config({"serve": {"autoscaling": {"look_back_period_s": 2}}})
    assert validate_config({"serve": {"autoscaling": {"look_back_period_s": 11}}}).serve.autoscaling.look_back_period_s == 11
