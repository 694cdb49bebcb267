"""The DeepSpeed config dict for one training stage, derived from the typed config."""

from __future__ import annotations

from recsys.config import TrainStageConfig


def deepspeed_config(stage: TrainStageConfig, use_gpu: bool) -> dict:
    config = {
        "train_micro_batch_size_per_gpu": stage.batch_size,
        "gradient_accumulation_steps": stage.gradient_accumulation_steps,
        "gradient_clipping": stage.grad_clip,
        "zero_optimization": {"stage": stage.zero_stage},
        # We pass a torch AdamW: DeepSpeed's fused/CPU Adam would JIT-build ops for ~75 s each on CPU.
        "zero_allow_untested_optimizer": True,
        # bf16 only on accelerators: on CPUs without AVX512-BF16 it is ~5× slower than fp32.
        "bf16": {"enabled": bool(use_gpu)},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if stage.zero_stage == 3:
        # Small models: keep every parameter partitioned; no persistence threshold surprises.
        config["zero_optimization"]["stage3_param_persistence_threshold"] = 0
    return config
