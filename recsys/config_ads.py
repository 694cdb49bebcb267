"""The `ads` section of the typed config (recsys/config.py re-exports it): the simulated ad world,
the pCTR model's training stage and calibration, the auction, budgets and pacing."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from recsys.config_base import ValidatedStageConfig, _BatchSize, _Epochs, _PeakLr, _Section


class AdWorldConfig(_Section):
    """The ad world drawn over a prepared shop (recsys/ads/world.py): advertisers' campaigns on
    catalog items, logged ad impressions with clicks from a known click model, and one more day of
    page views for the offline and served replays. No public ad log with bids and budgets exists
    here, so this is a simulation; docs/ads.md says what it assumes."""

    seed: int = 11
    campaigns: int = Field(300, ge=2, description="campaigns, each promoting one catalog item")
    advertisers: int = Field(60, ge=1, description="advertisers owning the campaigns (round robin)")
    logged_days: int = Field(7, ge=3, description="days of logged impressions: the last is test, the one before valid")
    requests_per_day: int = Field(20_000, ge=100, description="page views with ad slots per day")
    slots: int = Field(3, ge=1, le=8, description="ad slots per page view")
    position_bias: list[float] = Field([1.0, 0.65, 0.4], description="examination probability per slot, slot 0 first")
    mean_cpc_bid: float = Field(0.6, gt=0, description="median cost-per-click bid (log-normal across campaigns)")
    bid_sigma: float = Field(0.6, ge=0, description="log-normal spread of the bids")
    budget_ratio: float = Field(
        2.5, gt=0,
        description="all campaigns' daily budgets together ÷ the day's expected clicks priced at the bids (split with a "
                    "heavy tail, budget_sigma: small budgets bind, large ones do not)")
    budget_sigma: float = Field(1.0, ge=0, description="log-normal spread of the budgets beyond the bids'")
    base_logit: float = Field(-4.2, description="click log-odds of an ad the user has no interest in, at slot 0")
    interest_weight: float = Field(3.0, ge=0, description="log-odds added per unit of the user's interest in the ad item's category")
    quality_sigma: float = Field(0.7, ge=0, description="spread of the campaigns' hidden creative quality (log-odds)")
    targeted_share: float = Field(0.6, ge=0, le=1, description="share of campaigns targeting categories of interest")
    hour_targeted_share: float = Field(0.3, ge=0, le=1, description="share of campaigns running only a 12-hour window")

    @model_validator(mode="after")
    def _bias_per_slot(self) -> AdWorldConfig:
        if len(self.position_bias) < self.slots:
            raise ValueError(f"position_bias has {len(self.position_bias)} values for {self.slots} slots; give one per slot")
        if any(not 0 < b <= 1 for b in self.position_bias):
            raise ValueError(f"position_bias values must be in (0, 1], got {self.position_bias}")
        return self


class AdsTrainConfig(ValidatedStageConfig):
    """`ads.train`: the pCTR model, fine-tuned from the retrieval model with binary cross-entropy
    on logged ad impressions; the best epoch by valid AUC is exported and then calibrated."""

    refused_key_hints: ClassVar[dict[str, str]] = {"enabled": "ads.enabled turns the ads stage on and off"}

    epochs: _Epochs = 4
    batch_size: _BatchSize = 256
    lr: _PeakLr = 1e-3
    weight_decay: float = Field(1e-4, ge=0)
    zero_stage: Literal[0, 1, 2, 3] = Field(0, description="DeepSpeed ZeRO stage (0 = plain data parallel)")


class AuctionConfig(_Section):
    """One auction per /ads request (recsys/ads/auction.py)."""

    policy: Literal["ecpm", "highest_bid", "highest_pctr", "random"] = Field(
        "ecpm", description="how eligible ads are ranked: pCTR × bid (eCPM), the bid, the pCTR, or at random")
    candidates: int = Field(50, ge=1, description="eligible campaigns retrieved by the user vector before pCTR scoring")
    reserve_cpc: float = Field(0.05, ge=0, description="the lowest price per click; a bid under it never runs")
    quality_floor: float = Field(0.002, ge=0, lt=1, description="ads under this calibrated pCTR (at slot 0) are not shown")
    organic_weight: float = Field(0.0, ge=0, le=1, description="blend of organic relevance into the rank score (0: pure eCPM)")
    squash: float = Field(
        1.0, ge=0, le=1,
        description="eCPM ranks by pCTR^squash × bid (Lahaie & Pennock 2007): 1 = expected revenue per impression; lower "
                    "weighs the bid more, trading clicks for price (chosen on the valid day: benchmarks/ads.py)")
    frequency_cap: int = Field(3, ge=1, description="impressions of one campaign per user per day")
    pricing: Literal["gsp", "first_price"] = Field("gsp", description="gsp: the least a winner could have bid to keep its slot")


class PacingConfig(_Section):
    """Probabilistic throttling (recsys/ads/pacing.py): each campaign enters an auction with a
    probability a controller moves so spend follows the day's traffic curve."""

    enabled: bool = True
    interval_s: float = Field(900.0, gt=0, description="how often the controller updates the pass rates (seconds of the day)")
    gain: float = Field(2.0, gt=0, le=8, description="a pass rate is multiplied by (spend progress / traffic share)^-gain per update")
    lead_s: float = Field(3600.0, ge=0, le=86_400, description="compare the spend so far with the traffic share this far ahead")
    min_pass_rate: float = Field(0.02, gt=0, le=1)
    # gain 2 and lead 1 h were chosen on the ads benchmark's valid day: pacing error 0.095, revenue −3% unpaced (docs/ads.md)

    @model_validator(mode="after")
    def _lead_covers_an_interval(self) -> PacingConfig:
        if self.lead_s < self.interval_s:
            raise ValueError(f"lead_s ({self.lead_s}) must be ≥ interval_s ({self.interval_s}): the controller compares spend with "
                             "the traffic share at least one update ahead")
        return self


class AdsConfig(_Section):
    """Ad targeting (recsys/ads/, `ray_jobs/train_ads.py`, `POST /ads`)."""

    enabled: bool = Field(False, description="run the ads stage and serve /ads (needs a shop with categories: the synthetic shop)")
    world: AdWorldConfig = Field(default_factory=AdWorldConfig)
    train: AdsTrainConfig = Field(default_factory=AdsTrainConfig)
    calibration: Literal["isotonic", "platt"] = Field("isotonic", description="fitted on the valid day's impressions")
    calibration_bins: int = Field(20, ge=10, le=200, description="equal-count bins of the expected calibration error")
    auction: AuctionConfig = Field(default_factory=AuctionConfig)
    pacing: PacingConfig = Field(default_factory=PacingConfig)
    clock: Literal["server", "request"] = Field(
        "server",
        description="what time a served auction is charged and paced at: the server's (production), or the request's "
                    "context.timestamp (replaying a simulated day only: any caller could pick the budget day)")
