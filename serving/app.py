"""Typed Serve application builder: `serve run serving.app:build_app config=configs/demo.yaml`.

The same builder is what `serve build` turns into the Serve config a RayService embeds.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from ray.serve import Application

from recsys.config import RecsysConfig, load_config
from recsys.stages import latest_finetuned
from serving.recommender import RecommenderDeployment
from serving.serve_config import deployment_options


class ServeArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    config: str = Field(description="path to the recsys YAML config (the serve section is read)")
    overrides: list[str] = Field(default_factory=list, description="dotted.key=value overrides")
    model_path: str | None = Field(None, description="an exported model folder; default: the latest fine-tuned one")


def resolve_model(cfg: RecsysConfig, model_path: str | None) -> tuple[Path, Path]:
    """(model folder, dataset folder it was trained on), read from the export's recsys.json."""
    path = Path(model_path) if model_path else latest_finetuned(cfg)
    meta_file = path / "recsys.json"
    if not meta_file.is_file():
        raise FileNotFoundError(f"{path} is not an exported model (no recsys.json); point model_path at artifacts/models/...")
    return path, Path(json.loads(meta_file.read_text())["dataset_path"])


def build_app(args: ServeArgs | dict) -> Application:
    args = ServeArgs.model_validate(args)
    cfg = load_config(args.config, args.overrides)
    model_path, dataset_path = resolve_model(cfg, args.model_path)
    return RecommenderDeployment.options(**deployment_options(cfg.serve)).bind(str(model_path), str(dataset_path), cfg.serve.model_dump(mode="json"))
