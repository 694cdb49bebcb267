"""Request and response bodies of the HTTP API (validated by FastAPI; errors name the field)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class RecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: str | None = Field(None, min_length=1, max_length=256, description="a known user; unknown users get popular items")
    item_ids: list[str] | None = Field(None, description="recent item ids, oldest first; appended to the user's known history")
    k: int | None = Field(None, ge=1, description="how many items to return (default and maximum from serve config)")

    @model_validator(mode="after")
    def _needs_someone(self) -> RecommendRequest:
        if self.user_id is None and not self.item_ids:
            raise ValueError("send user_id, item_ids (a non-empty list of recent item ids), or both")
        return self


class RecommendedItem(BaseModel):
    item_id: str
    score: float
    title: str | None = None
    category: str | None = None
    brand: str | None = None
    price: float | None = None


class RecommendResponse(BaseModel):
    user_id: str | None
    cold_start: bool = Field(description="true when nothing is known about the user: popular items are returned")
    model_version: str
    items: list[RecommendedItem]


class FieldError(BaseModel):
    field: str
    message: str


class ErrorResponse(BaseModel):
    error: str
    detail: list[FieldError]
