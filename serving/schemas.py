"""Request and response bodies of the HTTP API (validated by FastAPI; errors name the field)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from recsys.online.catalog import Filters
from recsys.online.events import EVENT_TYPES


def _whole_number(value):
    """1.7e12 from a float64 serialiser is a whole number of ms; 1.5, "5" and true stay refused."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


EpochMs = Annotated[int, BeforeValidator(_whole_number)]


class _Body(BaseModel):
    # strict: a wrong JSON type (`"k": true`, `"explain": "yes"`, `"k": "5"`) answers 422 naming the field,
    # instead of being coerced; an integer is still a valid float (price).
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


class CatalogFilters(_Body):
    """Applied before retrieval and ranking: only matching items are candidates."""

    categories: list[str] | None = Field(None, min_length=1, max_length=100, description="only items of these categories")
    brands: list[str] | None = Field(None, min_length=1, max_length=100, description="only items of these brands")
    price_min: float | None = Field(None, ge=0)
    price_max: float | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _ordered(self):
        if self.price_min is not None and self.price_max is not None and self.price_min > self.price_max:
            raise ValueError(f"price_min ({self.price_min}) must be ≤ price_max ({self.price_max})")
        return self

    def to_engine(self) -> Filters:
        """The engine's Filters, field by field by name (a positional copy once lost `brands`)."""
        return Filters(**self.model_dump())


class FiltersBody(CatalogFilters):
    exclude_purchased: bool = Field(False, description="never return what the user bought (logs and live events)")


class _SomeoneBody(_Body):
    """A request about someone: a known user, a list of recent items, or both."""

    user_id: str | None = Field(None, min_length=1, max_length=256, description="a known user; unknown users get cold-start items")
    item_ids: list[str] | None = Field(None, description="recent item ids, oldest first; appended to the user's known history")

    @model_validator(mode="after")
    def _needs_someone(self):
        if self.user_id is None and not self.item_ids:
            raise ValueError("send user_id, item_ids (a non-empty list of recent item ids), or both")
        return self


class _UserBody(_SomeoneBody):
    timestamp: EpochMs | None = Field(
        None, ge=0, le=2**53,
        description="request time in ms since the epoch (hour and weekday of the ranking context); default: now",
    )
    explain: bool = Field(False, description="say which history items and attributes drove each score")


class RecommendRequest(_UserBody):
    k: int | None = Field(None, ge=1, description="how many items to return (default and maximum from serve config)")
    filters: FiltersBody | None = None


class RankRequest(_UserBody):
    candidates: list[str] = Field(min_length=1, description="item ids to order for this user")


class SearchRequest(_Body):
    query: str = Field(min_length=1, max_length=4096, description="the keywords; empty, word-less or overlong queries answer 422")
    user_id: str | None = Field(None, min_length=1, max_length=256, description="personalise the ranking with this user's history")
    item_ids: list[str] | None = Field(None, description="recent item ids, oldest first; appended to the user's known history")
    k: int | None = Field(None, ge=1, description="how many items to return (default and maximum from serve config)")
    filters: CatalogFilters | None = None
    mode: Literal["lexical", "dense", "hybrid", "hybrid_personal"] | None = Field(
        None, description="ranking: default hybrid_personal when a user or items are given, else hybrid"
    )


class NewItemRequest(_Body):
    item_id: str = Field(min_length=1, max_length=256)
    title: str | None = Field(None, max_length=1024)
    category: str | None = Field(None, max_length=256)
    brand: str | None = Field(None, max_length=256)
    price: float | None = Field(None, ge=0)
    attributes: list[str] = Field(default_factory=list, max_length=100, description="name:value strings as in the catalog")

    @model_validator(mode="after")
    def _has_content(self) -> NewItemRequest:
        if not (self.title or self.category or self.brand or self.attributes):
            raise ValueError("a new item needs a title, category, brand or attributes to be found and recommended by")
        return self


class NewItemResponse(BaseModel):
    item_id: str
    searchable: bool = Field(description="its text is embedded: /search finds it")
    recommendable: bool = Field(description="its vector comes from known attributes: /recommend can return it")
    known_attributes: list[str]
    unknown_attributes: list[str] = Field(description="attributes the models were not trained with (ignored for recommendation)")


class EventRequest(_Body):
    user_id: str = Field(min_length=1, max_length=256)
    item_id: str = Field(min_length=1, max_length=256)
    event: Literal[EVENT_TYPES] = Field(description="view, click, add_to_cart or purchase")
    timestamp: EpochMs | None = Field(None, ge=0, le=2**53, description="ms since the epoch; default: now")
    impression_id: str | None = Field(
        None, min_length=1, max_length=128,
        description="a click on an ad: the impression id /ads returned; its campaign is charged once (a repeat charges nothing)")

    @field_validator("impression_id")
    @classmethod
    def _ad_clicks_only(cls, value, info):
        event = info.data.get("event")
        if value is not None and event is not None and event != "click":
            raise ValueError(f"impression_id goes with event 'click' (an ad click), not {event!r}")
        return value


class HistoryEffect(BaseModel):
    item_id: str
    effect: float = Field(description="score with this history item minus score without it")


class AttributeShare(BaseModel):
    attribute: str
    contribution: float = Field(description="this attribute's exact additive share of the retrieval score u·v")


class Explanation(BaseModel):
    score_explained: Literal["retrieval", "ctr_logit"]
    history: list[HistoryEffect]
    attributes: list[AttributeShare]


class RecommendedItem(BaseModel):
    item_id: str
    score: float = Field(description="the ranking score: click probability with a CTR ranker, else u·v")
    retrieval_score: float | None = Field(None, description="u·v, the retrieval model's score (None for cold start)")
    title: str | None = None
    category: str | None = None
    brand: str | None = None
    price: float | None = None
    explanation: Explanation | None = None


class RecommendResponse(BaseModel):
    user_id: str | None = None  # left out of the answer when the request named no user
    cold_start: bool = Field(description="true when nothing is known about the user: popular items (within the filters) are returned")
    version: str = Field(description="the serving version: model version + index build")
    model_version: str
    ranker: Literal["retrieval", "ctr", "popularity"]
    items: list[RecommendedItem]

    @classmethod
    def of(cls, engine, user_id: str | None, answer) -> RecommendResponse:
        """The HTTP answer of an engine Recommendation (recsys.online.engine)."""
        items = [RecommendedItem(score=s.score, retrieval_score=s.retrieval_score,
                                 explanation=Explanation(**s.explanation) if s.explanation else None, **engine.item(s.index))
                 for s in answer.items]
        return cls(user_id=user_id, version=engine.version, model_version=engine.model_version,
                   cold_start=answer.cold_start, ranker=answer.ranker, items=items)


class SearchSignals(BaseModel):
    lexical_terms: list[str] = Field(description="query words (or a number with its unit) found in the item's text")
    lexical: float = Field(description="normalised BM25: over the query's best BM25 among the allowed items, or over the "
                           "bound no item reaches for its terms (search.lexical_norm)")
    semantic: float = Field(description="cosine of the query's and the item text's embeddings")
    personal: float | None = Field(None, description="the user's affinity (squashed z-score of u·v among candidates); personalised mode only")


class SearchHit(BaseModel):
    item_id: str
    score: float
    title: str | None = None
    category: str | None = None
    brand: str | None = None
    price: float | None = None
    signals: SearchSignals


class SearchResponse(BaseModel):
    query: str
    mode: Literal["lexical", "dense", "hybrid", "hybrid_personal"]
    user_id: str | None = None  # left out of the answer when the request named no user
    version: str
    items: list[SearchHit]


class EventResponse(BaseModel):
    user_id: str
    recorded: bool
    recent_events: int
    charged: float | None = Field(None, description="an ad click: what its campaign was charged (0 for a repeat click)")
    duplicate: bool | None = Field(None, description="an ad click already charged for this impression")


class AdContext(_Body):
    timestamp: EpochMs | None = Field(None, ge=0, le=2**53, description="ms since the epoch (hour, weekday, the budget's day); default: now")


class AdsRequest(_SomeoneBody):
    slots: list[Annotated[int, Field(ge=0)]] = Field(min_length=1, max_length=8, description="ad slot positions to fill, 0 = the top slot")
    context: AdContext | None = None

    @field_validator("slots")
    @classmethod
    def _distinct(cls, value):
        if len(set(value)) != len(value):
            raise ValueError(f"slots must be distinct positions, got {value}")
        return value


class AdHit(BaseModel):
    slot: int
    campaign_id: str
    advertiser_id: str
    item_id: str
    pctr: float = Field(description="calibrated click probability at this slot")
    ecpm: float = Field(description="expected revenue per thousand impressions: pCTR × bid × 1000")
    price_per_click: float = Field(description="charged when clicked (generalized second price)")
    impression_id: str = Field(description="send it with the click event (POST /events) to charge the click")


class AdsResponse(BaseModel):
    user_id: str | None
    ads: list[AdHit]
    candidates: int = Field(description="targeting-eligible campaigns the auction scored")
    model_version: str


class CampaignUpdate(_Body):
    bid: float | None = Field(None, gt=0, le=10_000, description="the new cost-per-click bid")
    daily_budget: float | None = Field(None, gt=0, le=1e9, validate_default=True,
                                       description="the new daily budget (today's spend so far counts against it)")

    @field_validator("daily_budget")
    @classmethod
    def _something(cls, value, info):
        if value is None and "bid" in info.data and info.data["bid"] is None:  # (a bid that failed has its own error)
            raise ValueError("send bid, daily_budget or both")
        return value


class CampaignResponse(BaseModel):
    campaign_id: str
    advertiser_id: str
    item_id: str
    bid: float
    daily_budget: float
    target_categories: list[str]
    hours: list[int] = Field(description="[start, end) UTC hours it runs; [0, 0] = all day")
    day: str = Field(description="the UTC day the spend is of")
    spent: float
    remaining: float
    impressions: int
    clicks: int
    pass_rate: float = Field(description="pacing: the share of eligible auctions it enters now")
    uncharged: float = Field(description="clicks' price beyond the budget, not charged")


class ItemResponse(BaseModel):
    item_id: str
    title: str | None
    category: str | None
    brand: str | None
    price: float | None
    attributes: list[str]
    train_count: int


class ForecastWeek(BaseModel):
    week: str = Field(description="the week's Monday (ISO date)")
    p10: float
    p50: float
    p90: float


class ReplenishmentAdvice(BaseModel):
    reorder_point: float = Field(description="order when the stock position falls to this (lead-time demand at the service level)")
    order_up_to: float = Field(description="order up to this position (lead time + one review week at the service level)")
    service_level: float
    lead_time_weeks: int


class ForecastResponse(BaseModel):
    item_id: str
    version: str
    origin: str = Field(description="the first forecast week (the week after the history's last whole week)")
    model: str
    weeks: list[ForecastWeek]
    total_p50: float
    replenishment: ReplenishmentAdvice


class FieldError(BaseModel):
    field: str
    message: str


class ErrorResponse(BaseModel):
    error: str
    detail: list[FieldError]
