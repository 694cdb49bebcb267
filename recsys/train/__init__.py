"""Ray Train + DeepSpeed ZeRO training of the models in recsys.models."""
