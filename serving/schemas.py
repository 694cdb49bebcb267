"""Request and response bodies of the HTTP API (validated by FastAPI; errors name the field)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from serving.events import EVENT_TYPES


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class FiltersBody(_Body):
    categories: list[str] | None = Field(None, min_length=1, max_length=100, description="only items of these categories")
    price_min: float | None = Field(None, ge=0)
    price_max: float | None = Field(None, ge=0)
    exclude_purchased: bool = Field(False, description="never return what the user bought (logs and live events)")

    @model_validator(mode="after")
    def _ordered(self) -> FiltersBody:
        if self.price_min is not None and self.price_max is not None and self.price_min > self.price_max:
            raise ValueError(f"price_min ({self.price_min}) must be ≤ price_max ({self.price_max})")
        return self


class _UserBody(_Body):
    user_id: str | None = Field(None, min_length=1, max_length=256, description="a known user; unknown users get cold-start items")
    item_ids: list[str] | None = Field(None, description="recent item ids, oldest first; appended to the user's known history")
    timestamp: int | None = Field(
        None, ge=0, le=2**53, description="request time in ms since the epoch (hour and weekday of the ranking context); default: now"
    )
    explain: bool = Field(False, description="say which history items and attributes drove each score")

    @model_validator(mode="after")
    def _needs_someone(self):
        if self.user_id is None and not self.item_ids:
            raise ValueError("send user_id, item_ids (a non-empty list of recent item ids), or both")
        return self


class RecommendRequest(_UserBody):
    k: int | None = Field(None, ge=1, description="how many items to return (default and maximum from serve config)")
    filters: FiltersBody | None = None


class RankRequest(_UserBody):
    candidates: list[str] = Field(min_length=1, description="item ids to order for this user")


class EventRequest(_Body):
    user_id: str = Field(min_length=1, max_length=256)
    item_id: str = Field(min_length=1, max_length=256)
    event: Literal[EVENT_TYPES] = Field(description="view, click, add_to_cart or purchase")
    timestamp: int | None = Field(None, ge=0, le=2**53, description="ms since the epoch; default: now")


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
    user_id: str | None
    cold_start: bool = Field(description="true when nothing is known about the user: popular items (within the filters) are returned")
    version: str = Field(description="the serving version: model version + index build")
    model_version: str
    ranker: Literal["retrieval", "ctr", "popularity"]
    items: list[RecommendedItem]


class EventResponse(BaseModel):
    user_id: str
    recorded: bool
    recent_events: int


class ItemResponse(BaseModel):
    item_id: str
    title: str | None
    category: str | None
    brand: str | None
    price: float | None
    attributes: list[str]
    train_count: int


class FieldError(BaseModel):
    field: str
    message: str


class ErrorResponse(BaseModel):
    error: str
    detail: list[FieldError]
