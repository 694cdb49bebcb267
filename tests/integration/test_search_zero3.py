"""The search encoder trains in the one training loop, so ZeRO-3 exports gathered weights: under
ZeRO-3 every rank holds only a shard of each parameter, and an export written from rank 0's
module without gathering holds empty tensors (the search loop's own save once did)."""

from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_zero3_search_encoder_export_equals_the_gathered_parameters(tiny_run, monkeypatch):
    import torch
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    from safetensors.torch import load_file

    from recsys.config import load_config
    from recsys.search.encoder import pretrained_path
    from recsys.search.train import train_search_encoder
    from recsys.train.loop import STATE_TAG

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # Its own run_name: the served tests' search encoder (run "it") stays the latest of its run.
    cfg = load_config(tiny_run.config_path, ["run_name=zero3", "search.train.zero_stage=3", "search.train.epochs=1"])
    result = train_search_encoder(cfg, tiny_run.dataset)
    assert result.export.meta.history[-1]["zero_stage"] == 3 and result.export.meta.history[-1]["world_size"] == 2

    exported = load_file(result.model_path / "model.safetensors")
    checkpoints = sorted(p for p in Path(result.export.meta.run_path).glob("checkpoint_*") if p.is_dir())
    # The full fp32 weights reassembled from every rank's ZeRO-3 shards in the last checkpoint.
    gathered = get_fp32_state_dict_from_zero_checkpoint(str(checkpoints[-1] / "deepspeed"), tag=STATE_TAG)
    gathered = {k.removeprefix("model."): v for k, v in gathered.items()}
    initial = load_file(pretrained_path() / "model.safetensors")
    shared = sorted(set(exported) & set(gathered))
    assert len(shared) >= 0.9 * len(gathered), (len(shared), len(gathered))
    moved = 0
    for name in shared:
        assert exported[name].shape == gathered[name].shape and exported[name].numel() > 0, name
        torch.testing.assert_close(exported[name], gathered[name], rtol=0, atol=0, msg=name)
        initial_name = name if name in initial else f"model.{name}" if f"model.{name}" in initial else None
        moved += initial_name is not None and not torch.equal(exported[name], initial[initial_name])
    assert moved > len(shared) // 2, "fine-tuning should have moved most weights"
