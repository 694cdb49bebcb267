"""Catalog lookups and filters of a served version (no model, no Ray)."""

import math

import numpy as np
import pyarrow as pa
import pytest

from recsys.config import ServeConfig
from recsys.online.catalog import Catalog, Filters, VersionCheckError
from recsys.online.engine import context_of
from serving.schemas import CatalogFilters, FiltersBody, RecommendedItem
from serving.serve_config import application, deployment_options, serve_config


def catalog(items: pa.Table) -> Catalog:
    return Catalog(items)


ITEMS = pa.table({
    "item_id": ["a", "b", "c", "d"], "title": pa.array([None, "Gel", "Soap", "Wax"], pa.string()),
    "category": pa.array([None, "hair", "skin", "hair"], pa.string()), "brand": pa.array([None, "acme", None, "zeta"], pa.string()),
    "price": pa.array([None, 9.5, 3.0, 20.0], pa.float64()), "attributes": [["x"], [], ["y"], []],
    "item_index": pa.array([1, 2, 3, 4], pa.int32()), "train_count": pa.array([5, 9, 1, 9], pa.int64()),
})


def test_catalog_without_titles_or_prices_serialises():
    """Amazon Beauty has no titles, categories, brands or prices: they must come out as null."""
    m = catalog(ITEMS)
    assert m.item(1) == {"item_id": "a", "title": None, "category": None, "brand": None, "price": None}
    assert m.item(2)["brand"] == "acme"
    item = RecommendedItem(score=1.0, **m.item(2))
    assert item.title == "Gel" and math.isclose(item.price, 9.5)
    RecommendedItem(score=0.5, **m.item(1))  # no validation error on missing fields


def test_filters_build_the_allowed_mask():
    m = catalog(ITEMS)
    assert m.allowed(None, set()) is None  # nothing to filter: FAISS searches unrestricted
    assert m.allowed(Filters(categories=["hair"]), set()).tolist() == [False, True, False, True]
    # A missing price never passes a price filter; exclusions are item indices.
    assert m.allowed(Filters(price_min=1.0, price_max=10.0), {3}).tolist() == [False, True, False, False]
    assert m.allowed(None, {1, 4}).tolist() == [False, True, True, False]
    assert m.allowed(Filters(brands=["acme", "zeta"], categories=["hair"]), set()).tolist() == [False, True, False, True]
    assert m.allowed(Filters(brands=["zeta"], price_max=10.0), set()).tolist() == [False, False, False, False]


def test_cold_start_is_popularity_within_the_filters_ties_in_catalog_order():
    m = catalog(ITEMS)
    assert [i for i, _ in m.popular_items(3, None)] == [2, 4, 1]
    assert [i for i, _ in m.popular_items(3, m.allowed(Filters(categories=["skin"]), set()))] == [3]


def test_catalog_with_gaps_is_refused():
    with pytest.raises(VersionCheckError, match="1..N"):
        catalog(ITEMS.filter(pa.array([True, False, True, True])))


def test_context_matches_the_ctr_examples_encoding():
    # 2023-11-14 22:13:20 UTC was a Tuesday (weekday 1, Monday = 0); session position is capped.
    assert context_of(1_700_000_000_000, 3) == (22, 1, 3)
    assert context_of(1_700_000_000_000, 10_000)[2] == 15


def test_price_range_must_be_ordered_and_finite():
    with pytest.raises(ValueError, match="price_min"):
        FiltersBody(price_min=5, price_max=1)
    with pytest.raises(ValueError):
        FiltersBody(price_min=float("nan"))


def test_serve_config_carries_queue_limits_and_swaps_through_user_config():
    from recsys.config import RecsysConfig

    cfg = RecsysConfig()
    options = deployment_options(cfg.serve)
    assert options["max_queued_requests"] == 64 and options["logging_config"] == {"enable_access_log": False}
    config = serve_config(cfg, "/etc/recsys/config.yaml", "v1.flat-abc")
    (dep,) = config["applications"][0]["deployments"]
    assert dep["user_config"] == {"index_version": "v1.flat-abc"}  # not args: args restart replicas
    assert config["applications"][0]["args"] == {"config": "/etc/recsys/config.yaml"}
    assert config["http_options"]["request_timeout_s"] == 10.0
    assert application(cfg, "c.yaml", overrides=["serve.max_k=5"])["args"]["overrides"] == ["serve.max_k=5"]


def test_default_k_above_max_k_is_a_config_error():
    with pytest.raises(ValueError, match="default_k"):
        ServeConfig(default_k=20, max_k=10)


def test_haproxy_ingress_without_the_binary_says_how_to_fix(monkeypatch):
    from recsys.config import ConfigError
    from recsys.runtime import serve_env

    monkeypatch.setenv("RAY_SERVE_HAPROXY_BINARY_PATH", "/nonexistent/haproxy")
    with pytest.raises(ConfigError, match="apt-get install haproxy"):
        serve_env(ServeConfig(ingress="haproxy"))
    assert serve_env(ServeConfig(ingress="proxy")) == {}


def test_request_filters_reach_the_engine_by_name():
    """Every filter field of the HTTP body arrives in the engine's Filters (brands was once lost)."""
    body = FiltersBody(categories=["hair"], brands=["zeta"], price_max=30.0, exclude_purchased=True)
    f = body.to_engine()
    assert (f.categories, f.brands, f.price_min, f.price_max, f.exclude_purchased) == (["hair"], ["zeta"], None, 30.0, True)
    assert catalog(ITEMS).allowed(f, set()).tolist() == [False, False, False, True]
    assert set(FiltersBody.model_fields) == set(Filters.__dataclass_fields__)
    assert CatalogFilters(brands=["acme"]).to_engine().brands == ["acme"]  # /search's filters


def test_allowed_mask_dtype_is_bool():
    assert catalog(ITEMS).allowed(Filters(categories=["skin"]), set()).dtype == np.bool_


@pytest.mark.parametrize(("body", "field"), [
    ({"user_id": "u", "k": True}, "k"),          # a bool is not a count
    ({"user_id": "u", "k": "5"}, "k"),           # nor is a string of digits
    ({"user_id": "u", "k": 2.0}, "k"),
    ({"user_id": "u", "explain": "yes"}, "explain"),
    ({"user_id": "u", "explain": 1}, "explain"),
    ({"user_id": "u", "explain": 0}, "explain"),        # lax mode would take 0 as false
    ({"user_id": "u", "filters": {"price_min": "3"}}, "filters.price_min"),  # and "3" as 3.0
    ({"user_id": "u", "timestamp": "1700000000000"}, "timestamp"),
    ({"user_id": "u", "filters": {"exclude_purchased": "true"}}, "filters.exclude_purchased"),
])
def test_request_bodies_take_their_json_types_strictly(body, field):
    from pydantic import ValidationError

    from serving.schemas import RecommendRequest

    with pytest.raises(ValidationError) as err:
        RecommendRequest.model_validate(body)
    assert [".".join(map(str, e["loc"])) for e in err.value.errors()] == [field]


def test_an_integer_is_still_a_price_and_a_whole_float_a_timestamp():
    from pydantic import ValidationError

    from serving.schemas import EventRequest, NewItemRequest, SearchRequest

    event = {"user_id": "u", "item_id": "i", "event": "click"}
    assert EventRequest.model_validate({**event, "timestamp": 1.7e12}).timestamp == 1_700_000_000_000  # a float64 serialiser
    with pytest.raises(ValidationError):
        EventRequest.model_validate({**event, "timestamp": 1.5})

    assert NewItemRequest.model_validate({"item_id": "a", "title": "Mug", "price": 3}).price == 3.0
    assert SearchRequest.model_validate({"query": "mug", "filters": {"price_max": 20}}).filters.price_max == 20.0
