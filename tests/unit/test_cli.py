"""The `recsys` command: one argparse tree, one --config/--set parent, extension commands by entry point.

No command here gets past parsing or config validation, so no Ray starts.
"""

import ast
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from recsys.cli import COMMANDS_GROUP, build_parser, main, run_stage
from recsys.entrypoints import PIPELINE_STAGES, STAGE_SCRIPTS

REPO = Path(__file__).resolve().parents[2]
# Every command that reads a config, as its words on the command line.
CONFIG_COMMANDS = [[stage] for stage in PIPELINE_STAGES] + [["eval", "report"], ["demo"]]


@pytest.fixture
def good_config(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("{}\n")
    return str(path)


def test_invalid_config_exits_2_with_the_field_named_and_no_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("finetune:\n  zero_stage: 7\n")
    assert run_stage("finetune", ["--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "finetune.zero_stage" in err and "Traceback" not in err


def test_bad_override_and_unknown_command(good_config, capsys):
    assert run_stage("prepare", ["--config", good_config, "--set", "data.sorce=beauty"]) == 2
    assert "data.sorce: unknown key" in capsys.readouterr().err
    assert main(["train-everything"]) == 2
    err = capsys.readouterr().err
    assert "usage: recsys" in err and "invalid choice: 'train-everything'" in err


@pytest.mark.parametrize("command", CONFIG_COMMANDS, ids=" ".join)
def test_every_config_command_parses_config_and_repeated_set(command):
    args = build_parser().parse_args([*command, "--config", "c.yaml", "--set", "a.b=1", "--set", "c=2"])
    assert (args.config, args.overrides) == ("c.yaml", ["a.b=1", "c=2"])
    assert callable(args.func)
    assert build_parser().parse_args([*command, "--config", "c.yaml"]).overrides == []


@pytest.mark.parametrize("command", CONFIG_COMMANDS, ids=" ".join)
def test_every_config_command_requires_config(command, capsys):
    assert main(command) == 2
    assert "the following arguments are required: --config" in capsys.readouterr().err


@pytest.mark.parametrize("command", CONFIG_COMMANDS, ids=" ".join)
def test_a_bad_set_exits_2_naming_the_field(command, good_config, capsys):
    assert main([*command, "--config", good_config, "--set", "finetune.epochz=3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "finetune.epochz" in err and "Traceback" not in err


def test_no_arguments_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: recsys") and all(c in err for c in (*PIPELINE_STAGES, "eval", "data", "k8s", "demo"))


@pytest.mark.parametrize("command", [["data"], ["eval"], ["k8s"], ["data", "plot"], ["k8s", "delete", "x"]], ids=" ".join)
def test_a_group_without_or_with_an_unknown_subcommand_exits_2(command, capsys):
    assert main(command) == 2
    assert "usage: recsys " + command[0] in capsys.readouterr().err


def test_help_exits_0(capsys):
    assert main(["--help"]) == 0
    assert main(["data", "stats", "--help"]) == 0
    assert main(["k8s", "submit", "--help"]) == 0
    assert "usage: recsys k8s submit" in capsys.readouterr().out


def test_demo_is_registered_by_serving_through_the_entry_point(capsys):
    (ep,) = [ep for ep in entry_points(group=COMMANDS_GROUP) if ep.name == "demo"]
    assert ep.value == "serving.demo:register"
    assert main(["demo", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: recsys demo") and "--config FILE" in out and "--set KEY=VALUE" in out


def test_a_broken_extension_warns_and_the_other_commands_still_work(monkeypatch, capsys):
    import recsys.cli as cli

    class Broken:
        name, value = "broken", "nowhere:register"

        def load(self):
            raise ImportError("No module named 'nowhere'")

    monkeypatch.setattr(cli, "entry_points", lambda group: [Broken()])
    assert main(["prepare", "--help"]) == 0
    assert "warning: command 'broken' (nowhere:register) could not be registered" in capsys.readouterr().err


def test_importing_the_cli_loads_neither_serving_nor_ray_jobs():
    code = ("import sys, recsys.cli; bad = sorted(m for m in sys.modules if m.split('.')[0] in ('serving', 'ray_jobs')); "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_each_ray_job_is_run_stage_of_its_stage():
    scripts = {p.name for p in (REPO / "ray_jobs").glob("*.py")}
    assert scripts == set(STAGE_SCRIPTS.values())
    for stage, script in STAGE_SCRIPTS.items():
        tree = ast.parse((REPO / "ray_jobs" / script).read_text())
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "run_stage"]
        assert [ast.literal_eval(c.args[0]) for c in calls] == [stage], script
