"""The pipeline's stages, in order, and their `ray_jobs/` entrypoints. No imports: the CLI, the
k8s job runner, the orchestration (recsys.stages) and error messages all read this one list."""

# stage → the script `ray job submit --working-dir . -- python ray_jobs/<script>` runs
STAGE_SCRIPTS: dict[str, str] = {
    "prepare": "prepare_data.py",
    "pretrain": "pretrain.py",
    "finetune": "finetune.py",
    "ctr": "train_ctr.py",
    "search": "train_search.py",
    "ads": "train_ads.py",
    "index": "build_index.py",
    "evaluate": "evaluate.py",
    "forecast": "forecast.py",
}
PIPELINE_STAGES: tuple[str, ...] = tuple(STAGE_SCRIPTS)


def script_for(stage: str) -> str:
    """`ray_jobs/<script>` of a stage (KeyError names the stages)."""
    try:
        return STAGE_SCRIPTS[stage]
    except KeyError:
        raise KeyError(f"unknown stage {stage!r}; the stages are {', '.join(PIPELINE_STAGES)}") from None
