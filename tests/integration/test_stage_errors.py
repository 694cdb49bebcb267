"""Stages with missing inputs stop with a message that says what to do, not a traceback."""

import pytest
import yaml

from recsys.cli import run_stage

pytestmark = pytest.mark.integration


def config_file(tmp_path, **data):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({"artifacts": {"root": str(tmp_path / "art")}, "data": data}))
    return str(path)


def test_missing_beauty_dir_names_the_setting(ray_session, tmp_path, capsys):
    path = config_file(tmp_path, source="beauty", beauty_dir=str(tmp_path / "nowhere"))
    assert run_stage("prepare", ["--config", path]) == 1
    err = capsys.readouterr().err
    assert "data.beauty_dir" in err and "Traceback" not in err


def test_training_before_prepare_says_run_prepare_first(ray_session, tmp_path, capsys):
    path = config_file(tmp_path, source="synthetic")
    assert run_stage("finetune", ["--config", path]) == 1
    assert "run the prepare stage first" in capsys.readouterr().err
