"""One typed config tree, loaded from one YAML file, read by every stage.

Each stage reads only its own section (`data`, `model`, `pretrain`, `finetune`, `ctr`, `eval`, `search`,
`index`, `serve`, `forecast`, `ads`), plus `artifacts` (where everything is written) and `cluster` (how Ray is sized).
Unknown keys and bad values fail with a `ConfigError` that names the file, the dotted field and what
is allowed. The training stages (`pretrain`, `finetune`, `ctr`, `search.train`, `forecast.train`, `ads.train`) share
`TrainStageConfig` and each adds only what it reads, so one stage's setting under another is refused.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from recsys.config_ads import AdsConfig, AdsTrainConfig, AdWorldConfig, AuctionConfig, PacingConfig  # noqa: F401
from recsys.config_base import (  # noqa: F401 - re-exported: the base every section builds on
    ConfigError,
    TrainStageConfig,
    ValidatedStageConfig,
    _BatchSize,
    _Epochs,
    _PeakLr,
    _Section,
    _WarmupRatio,
)
from recsys.config_forecast import BacktestConfig, ForecastConfig, ForecastTrainConfig, ReplenishmentConfig  # noqa: F401


class SyntheticShopConfig(_Section):
    """Size and seed of the generated shop used by tests, benchmarks and the demo without shared data."""

    num_users: int = Field(2000, ge=10, description="users in the generated shop")
    num_items: int = Field(500, ge=10, description="catalog size")
    num_categories: int = Field(12, ge=2)
    num_brands: int = Field(40, ge=2)
    mean_sessions_per_user: float = Field(4.0, gt=0)
    days: int = Field(180, ge=1, le=3650, description="length of the simulated period")
    launch_share: float = Field(
        0.0, ge=0.0, lt=1.0, description="share of products launched during the period (uniformly in its second "
        "half): no event shows them before their launch day (0: the whole catalog from day one)")
    trend_strength: float = Field(
        0.0, ge=0.0, le=1.0, description="per-product popularity trends: each product's events are thinned by a "
        "linear ramp over the period, rising or falling, down to 1 − this at its low end (0: no trends)")
    seed: int = 0


class ValidationConfig(_Section):
    """Row-level checks on raw events. A failing row is quarantined with a reason code, never dropped silently."""

    max_quarantine_fraction: float = Field(
        0.05, ge=0.0, le=1.0, description="fail the prepare stage when more than this share of rows is quarantined"
    )
    min_timestamp: datetime = Field(
        datetime(1995, 1, 1, tzinfo=UTC), description="earlier events are quarantined (catches 0 and seconds-read-as-ms)"
    )
    max_timestamp: datetime | None = Field(None, description="later events are quarantined; default: now + 1 day")
    numeric_timestamp_unit: Literal["s", "ms"] = Field("ms", description="unit of integer timestamps in the input")
    id_pattern: str = Field(r"^[A-Za-z0-9][A-Za-z0-9_.:@/+-]{0,127}$", description="regex every user_id/item_id must match")

    @model_validator(mode="after")
    def _pattern_compiles(self) -> ValidationConfig:
        try:
            re.compile(self.id_pattern)
        except re.error as exc:
            raise ValueError(f"id_pattern is not a valid regular expression: {exc}") from None
        for name in ("min_timestamp", "max_timestamp"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                object.__setattr__(self, name, value.replace(tzinfo=UTC))
        return self


class SplitConfig(_Section):
    """How evaluation examples are cut from the sequences, so that nothing evaluated is trained on."""

    # leave_one_out: per user, valid = second-to-last item, test = last (the published Beauty protocol).
    # time: one global cut for everyone; train before valid_cutoff, valid in [valid_cutoff, test_cutoff),
    # test after test_cutoff; item and attribute vocabularies come from the training side only.
    mode: Literal["leave_one_out", "time"] = "leave_one_out"
    valid_cutoff: datetime | None = Field(None, description="time mode: explicit cut; default the valid_quantile of event times")
    test_cutoff: datetime | None = Field(None, description="time mode: explicit cut; default the test_quantile of event times")
    valid_quantile: float = Field(0.8, gt=0, lt=1)
    test_quantile: float = Field(0.9, gt=0, lt=1)

    @model_validator(mode="after")
    def _ordered(self) -> SplitConfig:
        if self.valid_quantile >= self.test_quantile:
            raise ValueError(f"valid_quantile ({self.valid_quantile}) must be < test_quantile ({self.test_quantile})")
        if (self.valid_cutoff is None) != (self.test_cutoff is None):
            raise ValueError("set both valid_cutoff and test_cutoff, or neither (then the quantiles decide)")
        if self.valid_cutoff is not None and self.valid_cutoff >= self.test_cutoff:
            raise ValueError(f"valid_cutoff ({self.valid_cutoff}) must be before test_cutoff ({self.test_cutoff})")
        return self


DataFormat = Literal["auto", "parquet", "jsonl", "csv"]


class DataConfig(_Section):
    """Where behaviour logs come from and how sequences are built from them."""

    # auto: Amazon Beauty when `beauty_dir` exists, else the synthetic shop.
    # files: your own logs and catalog at `events_path` / `catalog_path` (local paths or s3://, gs://, ... URIs).
    # online_retail: the UCI Online Retail invoice log (a real shop; recsys.data.online_retail).
    source: Literal["auto", "beauty", "movielens", "online_retail", "synthetic", "files"] = "auto"
    name: str | None = Field(None, description="dataset name under artifacts; defaults to the resolved source")
    beauty_dir: str = "../shared/datasets/amazon-beauty"
    movielens_dir: str = "../shared/datasets/ml-100k"
    online_retail_dir: str = "../shared/datasets/online-retail"
    events_path: str | None = Field(None, description="events file or folder (source: files)")
    catalog_path: str | None = Field(None, description="catalog file or folder (source: files)")
    format: DataFormat = Field("auto", description="file format of events/catalog; auto: from the file extension")
    synthetic: SyntheticShopConfig = Field(default_factory=SyntheticShopConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    # Which events count as an interaction in a user's sequence (views are noise for next-item).
    interaction_events: list[Literal["view", "click", "add_to_cart", "purchase"]] = Field(
        default_factory=lambda: ["click", "add_to_cart", "purchase"], min_length=1
    )
    session_gap_minutes: float = Field(30.0, gt=0, description="inactivity that starts a new session")
    max_seq_len: int = Field(50, ge=3, le=4096, description="most recent items kept per user")
    max_attributes_per_item: int = Field(8, ge=1, le=256)
    min_user_interactions: int = Field(3, ge=3, description="leave-one-out needs train, valid and test")
    collapse_repeats: bool = Field(True, description="merge consecutive interactions with the same item (click → cart → buy)")
    cache_train_split: bool = Field(
        True,
        description="materialize the training split in Ray's object store once per fit instead of re-reading and "
        "re-filtering it every epoch; turn off when it does not fit",
    )

    @model_validator(mode="after")
    def _files_need_paths(self) -> DataConfig:
        if self.source == "files" and not (self.events_path and self.catalog_path):
            raise ValueError("source 'files' needs both data.events_path and data.catalog_path")
        return self


class ModelConfig(_Section):
    """Transformer encoder over item sequences; saved with every checkpoint and export."""

    hidden_size: int = Field(64, ge=8, le=8192)
    num_layers: int = Field(2, ge=1, le=64)
    num_heads: int = Field(2, ge=1, le=128)
    intermediate_size: int | None = Field(None, description="feed-forward width; default 4 × hidden_size")
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    attribute_embeddings: bool = Field(True, description="add mean attribute embedding to each item")
    text_features: bool = Field(
        False,
        description="add a learned projection of each item's text vector (title, category, brand, attributes embedded "
        "once by the pretrained MiniLM) to the item vector, so a new product is recommendable from its title; "
        "needs a catalog with titles",
    )
    text_max_tokens: int = Field(48, ge=8, le=512, description="text_features: tokens of an item's text the encoder reads")
    item_ids: bool = Field(
        True, description="learn an id embedding per item; false: an item is its content alone (attributes, text), so "
        "a product the model never saw is scored exactly like a trained one",
    )
    id_dropout: float = Field(
        0.0, ge=0.0, lt=1.0,
        description="training only: the share of items whose id embedding is left out of each forward pass, so the "
        "content part (attributes, text) learns to carry an item alone, as it must for a product the model never saw",
    )

    @model_validator(mode="after")
    def _id_dropout_needs_content(self) -> ModelConfig:
        if not self.item_ids and not (self.attribute_embeddings or self.text_features):
            raise ValueError("model.item_ids: false needs model.attribute_embeddings or model.text_features: "
                             "without them an item has no vector at all")
        if self.id_dropout and not (self.attribute_embeddings or self.text_features):
            raise ValueError("model.id_dropout > 0 needs model.attribute_embeddings or model.text_features: "
                             "without them a dropped item has no vector at all")
        return self

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> ModelConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads})"
            )
        return self


class PretrainConfig(TrainStageConfig):
    """`pretrain`: self-supervised masked-item (and masked-attribute) training of the encoder."""

    enabled: bool = Field(True, description="run the pretrain stage; false: finetune starts from random weights")
    epochs: _Epochs = 5
    mask_prob: float = Field(0.2, gt=0, lt=1, description="probability that an item of a sequence is masked")
    attribute_loss_weight: float = Field(
        0.0, ge=0.0, description="weight of masked-attribute prediction beside masked items (0 = off)"
    )
    content_loss_weight: float = Field(
        0.0, ge=0.0, description="text alignment: weight of predicting each masked item from its content vector "
        "alone (attributes + projected text, no id embedding) beside masked items (0 = off)",
    )
    pool_with: list[str] = Field(
        default_factory=list,
        description="config files of other shops (time-split, with titles) whose training periods are pooled with "
        "this shop's for pretraining (recsys/data/pooled.py); finetune then starts from the pooled model, its "
        "transformer and text projection shared, item rows matched by id. Needs model.text_features: true",
    )

    @model_validator(mode="after")
    def _pooling_needs_pretraining(self) -> PretrainConfig:
        if self.pool_with and not self.enabled:
            raise ValueError("pretrain.pool_with needs pretrain.enabled: true (it is the pretraining data)")
        return self


class FinetuneConfig(ValidatedStageConfig):
    """`finetune`: next-item training of the retrieval model. Always runs (it is what serving loads)."""

    refused_key_hints: ClassVar[dict[str, str]] = {"enabled": "the finetune stage always runs"}

    loss: Literal["full_softmax", "sampled_softmax"] = Field(
        "full_softmax",
        description="full softmax over the catalog, or sampled softmax with log-Q correction for catalogs "
        "too large to score in full each step",
    )
    num_negatives: int = Field(1024, ge=1, description="sampled_softmax: negatives per step, shared by the batch")
    negative_sampling_power: float = Field(
        0.75, ge=0.0, le=1.0, description="sampled_softmax: negatives drawn ∝ train_count^power (0 = uniform)"
    )
    content_loss_weight: float = Field(
        0.0, ge=0.0, description="weight of the next item found by its content vector alone (attributes + projected "
        "text, no id embedding; full softmax) beside the next-item loss: what a cold product is ranked by (0 = off)",
    )


class CtrConfig(ValidatedStageConfig):
    """`ctr`: the CTR ranking head, BCE on impressions with click labels (examples/ctr), starting
    from the latest fine-tuned retrieval model."""

    enabled: bool = Field(False, description="run the ctr stage; the logs must hold impressions")
    epochs: _Epochs = 3
    lr: _PeakLr = 5e-4


class SearchTrainConfig(TrainStageConfig):
    """`search.train`: contrastive fine-tuning of the text encoder on (query, clicked item) pairs.
    Its loop has no valid split and no masking, so it takes the shared settings only."""

    refused_key_hints: ClassVar[dict[str, str]] = {"enabled": "search.enabled turns the search stage on and off"}

    epochs: _Epochs = 2
    batch_size: _BatchSize = 64
    lr: _PeakLr = 3e-5
    warmup_ratio: _WarmupRatio = 0.1


class EvalConfig(_Section):
    ks: list[int] = Field(default_factory=lambda: [5, 10, 20], min_length=1)
    split: Literal["valid", "test"] = "test"
    # S3-Rec's full-sort evaluation drops the user's own history items from the ranking.
    exclude_history: bool = True
    sampled_negatives: int | None = Field(
        None, ge=1,
        description="rank the target against this many popularity-sampled negatives instead of the full catalog "
        "(labelled 'sampled' in every report; not comparable with full-ranking numbers)",
    )
    batch_size: int = Field(512, ge=1)
    seed: int = 0
    # Segments of the split (recsys/eval/segments.py): users with at most this many history items,
    # and the window of the "newest popular items" baseline (sales in the days before the cut).
    short_history_max: int = Field(3, ge=1, description="a row is 'short history' with at most this many history items")
    recent_days: int = Field(28, ge=1, description="window of the newest-popular baseline: interactions in the days before the cut")

    @model_validator(mode="after")
    def _positive_ks(self) -> EvalConfig:
        if any(k < 1 for k in self.ks):
            raise ValueError(f"every k must be ≥ 1, got {self.ks}")
        return self


SERVE_METRICS_INTERVAL_S = 10.0  # Ray Serve's autoscaling metrics interval; a shorter look-back window is refused by Serve


class ServeAutoscaling(_Section):
    """Ray Serve autoscaling of the recommender deployment (replaces a fixed num_replicas)."""

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(4, ge=1)
    target_ongoing_requests: float = Field(8.0, gt=0)
    upscale_delay_s: float | None = Field(None, ge=0, description="how long load must stay above target before a replica is added (None: Serve's 30 s)")
    downscale_delay_s: float | None = Field(None, ge=0, description="how long load must stay below target before a replica is removed (None: Serve's 600 s)")
    look_back_period_s: float | None = Field(
        None, gt=SERVE_METRICS_INTERVAL_S,
        description=f"the window Serve averages ongoing requests over (None: Serve's 30 s); must exceed Serve's {SERVE_METRICS_INTERVAL_S:.0f} s metrics interval")

    @model_validator(mode="after")
    def _ordered(self) -> ServeAutoscaling:
        if self.max_replicas < self.min_replicas:
            raise ValueError(f"max_replicas ({self.max_replicas}) must be ≥ min_replicas ({self.min_replicas})")
        return self


class IndexConfig(_Section):
    """The ANN index over item vectors (recsys.index, `ray_jobs/build_index.py`)."""

    kind: Literal["auto", "flat", "hnsw", "ivf"] = Field(
        "auto", description="flat: exact inner product; hnsw / ivf: approximate; auto: flat below exact_below items, else hnsw"
    )
    exact_below: int = Field(50_000, ge=1, description="auto picks exact search for catalogs smaller than this")
    hnsw_m: int = Field(32, ge=4, le=256, description="HNSW graph degree")
    hnsw_ef_construction: int = Field(
        100, ge=8, description="HNSW build breadth: higher builds slower and more exact (build times: see docs/serving.md)"
    )
    hnsw_ef_search: int = Field(256, ge=8, description="HNSW search breadth: higher is slower and more exact")
    ivf_nlist: int | None = Field(None, ge=1, description="IVF cells; default 4·sqrt(items)")
    ivf_nprobe: int = Field(
        64, ge=1, description="IVF cells visited per query: higher is slower and more exact (measured recall: see docs/serving.md)"
    )
    recall_queries: int = Field(1000, ge=10, description="queries used to measure recall@100 against exact search at build time")
    min_recall_at_100: float = Field(
        0.95, ge=0.0, le=1.0, description="a build or model swap whose measured recall@100 is lower is refused"
    )
    seed: int = 0


class ServeBatching(_Section):
    """`@serve.batch` of the scoring step: concurrent requests share one encoder pass."""

    max_batch_size: int = Field(16, ge=1, le=1024)
    batch_wait_timeout_s: float = Field(0.002, ge=0.0, le=1.0, description="a batch waits this long for more requests (a request alone in the replica is computed at once)")


class EventStoreConfig(_Section):
    """Where users' real-time events live (POST /events → the next /recommend)."""

    backend: Literal["memory", "redis"] = Field("memory", description="memory: one store replica with a log + snapshots; redis: a Redis server")
    path: str | None = Field(None, description="memory backend's log and snapshot folder; default <artifacts.root>/serving/events")
    snapshot_every: int = Field(1000, ge=1, description="write a snapshot and truncate the log after this many events")
    fsync: bool = Field(False, description="fsync the log before acknowledging (survives a machine crash, not only a process restart)")
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="redis backend: server URL")
    max_events_per_user: int = Field(200, ge=1, description="recent events kept per user")


class ServeAuth(_Section):
    """`serve.auth`: bearer tokens per role (serving/auth.py). The tokens live in environment
    variables (in Kubernetes, from the Secret the chart's values name), never in a config."""

    enabled: bool = Field(False, description="refuse requests without a token of the route's role (401/403); the chart turns it on")
    token_env: dict[str, str] = Field(
        default_factory=lambda: {"read": "RECSYS_READ_TOKEN", "write": "RECSYS_WRITE_TOKEN", "admin": "RECSYS_ADMIN_TOKEN"},
        description="role → the environment variable holding its tokens (comma-separated for rotation)",
    )

    @model_validator(mode="after")
    def _roles(self) -> ServeAuth:
        if set(self.token_env) != {"read", "write", "admin"}:
            raise ValueError(f"token_env must name a variable for each role read, write, admin; got {sorted(self.token_env)}")
        return self


class ServeConfig(_Section):
    ingress: Literal["haproxy", "proxy"] = Field(
        "haproxy",
        description="haproxy: Ray Serve's HAProxy ingress straight to the replicas' own HTTP servers (needs the haproxy binary; "
        "faster, see docs/serving.md); proxy: Serve's Python proxy actor",
    )
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    route_prefix: str = "/"
    num_replicas: int = Field(1, ge=1, description="fixed replica count when autoscaling is not set")
    autoscaling: ServeAutoscaling | None = None
    max_ongoing_requests: int = Field(32, ge=1, description="requests a replica works on at once")
    max_queued_requests: int = Field(64, ge=-1, description="requests allowed to wait for a replica; beyond it: 503 (-1: unbounded)")
    request_timeout_s: float | None = Field(10.0, gt=0, description="a request not answered within this answers 408")
    max_body_bytes: int = Field(65_536, ge=256, description="larger request bodies answer 413")
    default_k: int = Field(10, ge=1, le=1000)
    max_k: int = Field(100, ge=1, le=10_000)
    candidates: int = Field(100, ge=1, le=10_000, description="ANN candidates retrieved before ranking (at least k is always used)")
    ranker: Literal["auto", "retrieval", "ctr"] = Field(
        "auto", description="auto: the CTR model when the ctr stage published one, else the retrieval score"
    )
    max_history: int = Field(200, ge=1, description="longest item_ids list a request may send")
    exclude_history: bool = Field(True, description="never recommend what the user already interacted with")
    cpus_per_replica: float = Field(1.0, gt=0)
    access_log: bool = Field(
        False, description="Serve's per-request access log lines (off by default: writing them slows a busy replica)"
    )
    batching: ServeBatching = Field(default_factory=ServeBatching)
    events: EventStoreConfig = Field(default_factory=EventStoreConfig)
    auth: ServeAuth = Field(default_factory=ServeAuth)

    @model_validator(mode="after")
    def _k_fits(self) -> ServeConfig:
        if self.default_k > self.max_k:
            raise ValueError(f"default_k ({self.default_k}) must be ≤ max_k ({self.max_k})")
        return self


class LexicalConfig(_Section):
    """`search.lexical`: how item texts and queries become BM25 terms (recsys.search.lexical). All
    on by default: on Online Retail and MovieLens titles and the synthetic shop, each step helped
    or was neutral, and none cost measurable time (benchmarks/search_text.py, docs/search.md)."""

    stem: bool = Field(True, description="Snowball English stemming (PyStemmer) of alphabetic terms")
    stopwords: bool = Field(True, description="drop English stop words (bm25s's list)")
    units: bool = Field(True, description="one term per number and unit (12 oz → 12oz, 1/2 in. → 1/2in); model codes joined (XR-500 → xr500)")
    typos: bool = Field(True, description="a query term the catalog lacks is replaced by the vocabulary term within 1–2 edits (RapidFuzz)")


class SearchAdaptConfig(_Section):
    """`search.adapt`: fine-tune the encoder on the catalog's own pseudo-queries when the logs hold
    no searches (recsys.search.adapt), with the `search.train` settings."""

    enabled: bool = Field(False, description="adapt the encoder to the catalog's text when the logs hold no searches")
    queries_per_item: int = Field(3, ge=1, le=20, description="pseudo-queries made from each catalog item")
    holdout: float = Field(0.1, gt=0, lt=0.5, description="share of distinct titles (all their items) kept out of training "
                           "for the safeguard (an adapted encoder scoring below the pretrained one there is not used)")
    pool_max: int = Field(5000, ge=100, description="the safeguard ranks among all items, or the held-out items plus "
                          "this many others on larger catalogs")


class SearchConfig(_Section):
    """Keyword search (recsys.search): the text encoder's contrastive fine-tuning, the score mix,
    and what `/search` accepts."""

    enabled: bool = Field(True, description="build the text index and serve /search (the search stage fine-tunes when the logs hold searches)")
    train: SearchTrainConfig = Field(default_factory=SearchTrainConfig)
    temperature: float = Field(0.05, gt=0, le=1, description="InfoNCE temperature of (query, clicked item) pairs, in-batch negatives")
    max_tokens: int = Field(48, ge=8, le=512)
    dense_weight: float = Field(0.6, ge=0)
    lexical_weight: float = Field(0.4, ge=0)
    personal_weight: float = Field(0.3, ge=0)
    candidates: int = Field(200, ge=10, description="dense top-N ∪ lexical top-N re-scored by the hybrid variants")
    lexical: LexicalConfig = Field(default_factory=LexicalConfig)
    adapt: SearchAdaptConfig = Field(default_factory=SearchAdaptConfig)
    fusion: Literal["weighted", "rrf"] = Field("weighted", description="hybrid score: weighted sum of normalised signals, or reciprocal-rank fusion")
    lexical_norm: Literal["best", "bound"] = Field(
        "best", description="weighted fusion's BM25 scale: the query's best allowed BM25, or the bound no item can reach for its terms")
    rrf_k: int = Field(60, ge=1, description="reciprocal-rank fusion's constant k in weight / (k + rank)")
    max_query_chars: int = Field(256, ge=8, le=4096, description="longer queries answer 422")
    max_query_terms: int = Field(32, ge=1, le=512, description="queries with more words answer 422")
    query_cache_size: int = Field(4096, ge=0, description="query embeddings kept per replica (LRU); 0: none")
    query_runtime: Literal["onnx", "onnx_int8", "torch"] = Field(
        "onnx", description="what encodes queries in the replicas: the encoder exported to ONNX Runtime (fp32, same vectors, "
        "~3x faster per query), its int8 quantisation (faster again, less exact), or torch (recsys.search.query_encoder)")
    query_min_cosine: float = Field(0.99, gt=0, le=1, description="the index stage keeps the torch query encoder when the "
                                    "export's worst cosine with it on the recall queries is below this")


class ClusterConfig(_Section):
    """How Ray is sized. `address` None starts a local Ray (the embedded default)."""

    address: str | None = None
    num_cpus: int | None = Field(4, ge=1, description="logical CPUs for a local Ray (spare ones avoid the Train+Data hang)")
    object_store_memory_mb: int | None = Field(512, ge=78)
    include_dashboard: bool = False
    train_workers: int = Field(2, ge=1)
    cpus_per_worker: float = Field(1.0, gt=0)
    use_gpu: bool = False
    max_failures: int = Field(0, ge=-1, description="Ray Train worker-group restarts (-1: unlimited)")


class ArtifactsConfig(_Section):
    root: str = Field("artifacts", description="local folder (relative to the working directory) for datasets, runs, models")


class RecsysConfig(_Section):
    artifacts: ArtifactsConfig = Field(default_factory=ArtifactsConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    # CTR ranking head on impressions with click labels (examples/ctr); off unless the data has impressions.
    ctr: CtrConfig = Field(default_factory=CtrConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    index: IndexConfig = Field(default_factory=IndexConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    forecast: ForecastConfig = Field(default_factory=ForecastConfig)
    ads: AdsConfig = Field(default_factory=AdsConfig)
    run_name: str = Field("recsys", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

    @model_validator(mode="after")
    def _pooling_needs_text(self) -> RecsysConfig:
        if self.pretrain.pool_with and not self.model.text_features:
            raise ValueError("pretrain.pool_with needs model.text_features: true (the item text is what the shops share)")
        content = self.model.attribute_embeddings or self.model.text_features
        for stage in ("pretrain", "finetune"):
            if getattr(self, stage).content_loss_weight and not content:
                raise ValueError(f"{stage}.content_loss_weight > 0 needs model.attribute_embeddings or model.text_features "
                                 "(the content an item is found by); set it to 0 for an id-only model")
        return self

    def section_hash(self, *sections: str) -> str:
        """Short stable hash of the named sections: names dataset and model versions."""
        payload = {name: getattr(self, name).model_dump(mode="json") for name in sections}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]

    @property
    def artifacts_root(self) -> Path:
        return Path(self.artifacts.root).expanduser().resolve()


def training_stage_sections(model: type[BaseModel] | None = None, prefix: str = "") -> dict[str, type[TrainStageConfig]]:
    """Dotted section → its stage class, for every training stage in the tree, in config order:
    {"pretrain": PretrainConfig, "finetune": FinetuneConfig, "ctr": CtrConfig, "search.train": SearchTrainConfig}."""
    found: dict[str, type[TrainStageConfig]] = {}
    for name, field in (model or RecsysConfig).model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, TrainStageConfig):
            found[prefix + name] = ann
        elif isinstance(ann, type) and issubclass(ann, BaseModel):
            found.update(training_stage_sections(ann, f"{prefix}{name}."))
    return found


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _describe(err: dict[str, Any], model: type[BaseModel]) -> str:
    loc = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        parent = model
        for part in err["loc"][:-1]:
            field = parent.model_fields.get(str(part)) if isinstance(parent, type) else None
            ann = field.annotation if field else None
            parent = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
            if parent is None:
                break
        allowed = ", ".join(sorted(parent.model_fields)) if parent else "see recsys/config.py"
        key = str(err["loc"][-1])
        if parent is not None and issubclass(parent, TrainStageConfig):
            section = ".".join(str(p) for p in err["loc"][:-1])
            owners = [name for name, cls in training_stage_sections(model).items() if key in cls.model_fields]
            if owners:
                hint = parent.refused_key_hints.get(key)
                return (
                    f"{loc}: not a setting of the {section} stage (it is a {_and(owners)} setting"
                    f"{'; ' + hint if hint else ''}); allowed keys here: {allowed}"
                )
        return f"{loc}: unknown key; allowed keys here: {allowed}"
    msg = err["msg"].removeprefix("Value error, ")
    got = err.get("input")
    shown = "" if isinstance(got, dict) or got is None else f" (got {got!r})"
    return f"{loc or '<top level>'}: {msg}{shown}"


def validate_config(raw: dict[str, Any], source: str = "<dict>") -> RecsysConfig:
    try:
        return RecsysConfig.model_validate(raw)
    except ValidationError as exc:
        lines = [_describe(e, RecsysConfig) for e in exc.errors()]
        raise ConfigError(f"invalid config {source}:\n  " + "\n  ".join(lines)) from None


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `dotted.key=value` overrides (value parsed as YAML) onto a raw config dict."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected dotted.key=value, e.g. finetune.epochs=3")
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part} is not a section")
        node[parts[-1]] = yaml.safe_load(value)
    return raw


def load_config(path: str | Path, overrides: list[str] | None = None) -> RecsysConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found; pass an existing YAML file, e.g. configs/demo.yaml")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path}: the top level must be a mapping of sections")
    return validate_config(apply_overrides(raw, overrides or []), source=str(path))
