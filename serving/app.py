"""Typed Serve application builder: `serve run serving.app:build_app config=configs/demo.yaml`.

The same builder is what `make serve-config` turns into the Serve config a RayService embeds.
`index_version` picks the version to serve at build time (default: the index stage's LATEST). To
swap a running app without downtime, change the deployment's `user_config.index_version` in the
Serve config (serving.serve_config, serving.deploy): that is an in-place `reconfigure`.

A replica is built from one typed argument, the library's `EngineSpec` (its config sections and
artifact paths).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from ray.serve import Application

from recsys.artifacts import ArtifactStore, IndexRelease
from recsys.config import RecsysConfig, load_config
from recsys.online.engine import EngineSpec
from serving.recommender import AdLedgerDeployment, EventStoreDeployment, RecommenderDeployment
from serving.serve_config import deployment_options


class ServeArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    config: str = Field(description="path to the recsys YAML config (serve, index, data and artifacts are read)")
    overrides: list[str] = Field(default_factory=list, description="dotted.key=value overrides")
    index_version: str | None = Field(None, description="a published index version (model + index); default: the latest")


def resolve_release(cfg: RecsysConfig, index_version: str | None) -> IndexRelease:
    store = ArtifactStore.of(cfg)
    return store.latest("index") if index_version is None else store.version("index", index_version)


def build_app(args: ServeArgs | dict) -> Application:
    args = ServeArgs.model_validate(args)
    cfg = load_config(args.config, args.overrides)
    release = resolve_release(cfg, args.index_version)
    spec = EngineSpec.of(cfg)
    events = None
    if cfg.serve.events.backend == "memory":
        events = EventStoreDeployment.bind(spec.events_folder, cfg.serve.events.model_dump(mode="json"))
    user_config = {"index_version": release.version}
    forecast = ArtifactStore.of(cfg).latest("forecast", required=False) if cfg.forecast.enabled else None
    if forecast is not None:
        user_config["forecast_version"] = forecast.version
    ad_ledger = None
    if cfg.ads.enabled:  # the latest ads export, and the ledger that owns its campaigns' budgets
        ads = ArtifactStore.of(cfg).latest("ads", required=False)
        if ads is not None:
            spec.ads_export = str(ads.path)
            ad_ledger = AdLedgerDeployment.bind(str(ads.path), spec.ads_ledger_folder, cfg.ads.model_dump(mode="json"))
    return RecommenderDeployment.options(**deployment_options(cfg.serve), user_config=user_config).bind(
        spec.model_dump(mode="json"), events, ad_ledger
    )
