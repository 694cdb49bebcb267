"""recsys-platform: behaviour logs → Ray Data → transformer pretraining/fine-tuning on Ray Train +
DeepSpeed → evaluation → Ray Serve. One folder per stage: data, models, train, eval."""

__version__ = "0.1.0"
