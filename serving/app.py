"""Typed Serve application builder: `serve run serving.app:build_app config=configs/demo.yaml`.

The same builder is what `make serve-config` turns into the Serve config a RayService embeds.
`index_version` picks the version to serve at build time (default: the index stage's LATEST). To
swap a running app without downtime, change the deployment's `user_config.index_version` in the
Serve config (serving.serve_config, serving.deploy): that is an in-place `reconfigure`.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from ray.serve import Application

from recsys.config import RecsysConfig, load_config
from recsys.index.build import IndexRelease, index_parent, latest_index
from serving.recommender import EventStoreDeployment, RecommenderDeployment, default_events_folder
from serving.serve_config import deployment_options


class ServeArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    config: str = Field(description="path to the recsys YAML config (serve, index, data and artifacts are read)")
    overrides: list[str] = Field(default_factory=list, description="dotted.key=value overrides")
    index_version: str | None = Field(None, description="a published index version (model + index); default: the latest")


def resolve_release(cfg: RecsysConfig, index_version: str | None) -> IndexRelease:
    if index_version is None:
        return latest_index(cfg)
    return IndexRelease.load(index_parent(cfg) / index_version)


def build_app(args: ServeArgs | dict) -> Application:
    args = ServeArgs.model_validate(args)
    cfg = load_config(args.config, args.overrides)
    release = resolve_release(cfg, args.index_version)
    events = None
    if cfg.serve.events.backend == "memory":
        folder = cfg.serve.events.path or str(default_events_folder(cfg.artifacts_root))
        events = EventStoreDeployment.bind(folder, cfg.serve.events.model_dump(mode="json"))
    return RecommenderDeployment.options(**deployment_options(cfg.serve), user_config={"index_version": release.version}).bind(
        cfg.serve.model_dump(mode="json"),
        cfg.index.model_dump(mode="json"),
        str(index_parent(cfg)),
        list(cfg.data.interaction_events),
        int(cfg.data.session_gap_minutes * 60_000),
        events,
        cfg.search.model_dump(mode="json"),
        str(items_log(cfg)),
    )


def items_log(cfg: RecsysConfig):
    """Where POST /items makes new items durable (serving.cold_start), beside the event store."""
    return cfg.artifacts_root / "serving" / cfg.run_name / "new_items.jsonl"
