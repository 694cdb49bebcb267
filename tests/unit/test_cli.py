from recsys.cli import main, run_stage


def test_invalid_config_exits_2_with_the_field_named_and_no_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("finetune:\n  zero_stage: 7\n")
    assert run_stage("finetune", ["--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "finetune.zero_stage" in err and "Traceback" not in err


def test_bad_override_and_unknown_command(tmp_path, capsys):
    good = tmp_path / "ok.yaml"
    good.write_text("{}\n")
    assert run_stage("prepare", ["--config", str(good), "--set", "data.sorce=beauty"]) == 2
    assert "data.sorce: unknown key" in capsys.readouterr().err
    assert main(["train-everything"]) == 2
    assert "usage: recsys" in capsys.readouterr().err
