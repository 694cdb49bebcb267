"""Authentication of the serving routes (serving/auth.py) through the ingress's real middleware:
every write route refuses a missing or wrong token, a read token cannot write, probes stay open."""

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import serving.http as http
from serving.auth import Authenticator, required_role

TOKENS = {"RECSYS_READ_TOKEN": "r" * 24, "RECSYS_WRITE_TOKEN": "w" * 24 + ",w2" + "x" * 22, "RECSYS_ADMIN_TOKEN": "a" * 24}
ENV = {"read": "RECSYS_READ_TOKEN", "write": "RECSYS_WRITE_TOKEN", "admin": "RECSYS_ADMIN_TOKEN"}
ROUTES = [("post", "/recommend", "read"), ("post", "/rank", "read"), ("post", "/search", "read"), ("get", "/items/sku-1", "read"),
          ("get", "/forecast/sku-1", "read"), ("post", "/events", "write"), ("post", "/items", "write")]


@pytest.fixture
def client(monkeypatch):
    app = FastAPI()
    app.add_middleware(http.GuardMiddleware)
    for method, path, _ in ROUTES + [("get", "/healthz", None), ("get", "/readyz", None)]:
        route = path.replace("sku-1", "{item_id}")
        getattr(app, method)(route)(lambda: {"ok": True})
    guard = http.Guard(auth=Authenticator.from_env(ENV, TOKENS))
    monkeypatch.setattr(http, "replica_guard", lambda: guard)
    return TestClient(app)


def call(client, method, path, token=None, scheme="Bearer"):
    headers = {"Authorization": f"{scheme} {token}"} if token is not None else {}
    return getattr(client, method)(path, headers=headers, **({"json": {}} if method == "post" else {}))


@pytest.mark.parametrize(("method", "path", "role"), ROUTES)
def test_each_route_needs_its_role(client, method, path, role):
    missing = call(client, method, path)
    assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
    assert missing.json()["error"] == "unauthorized" and missing.json()["detail"][0]["field"] == "authorization"
    wrong = call(client, method, path, "z" * 24)
    assert wrong.status_code == 401 and "z" * 24 not in wrong.text  # a token is never echoed
    assert call(client, method, path, "r" * 24, scheme="Basic").status_code == 401
    read = call(client, method, path, "r" * 24)
    assert read.status_code == (200 if role == "read" else 403)
    if role == "write":
        assert read.json()["error"] == "forbidden" and "needs a write token" in read.json()["detail"][0]["message"]
    for token in ("w" * 24, "w2" + "x" * 22, "a" * 24):  # write (both rotated tokens) and admin include read
        assert call(client, method, path, token).status_code == 200, token


@pytest.mark.parametrize("path", ["/events%0A", "/events%09", "/events/", "/items%20", "/unknown"])
def test_odd_spellings_of_a_write_route_still_need_write(client, path):
    """Fail-closed: the router matches /events followed by a newline; the role check must not read it as a read route."""
    assert call(client, "post", path, "r" * 24).status_code == 403


def test_tokens_never_appear_in_a_repr():
    auth = Authenticator.from_env(ENV, TOKENS)
    assert "r" * 24 not in repr(auth) and "w" * 24 not in repr(http.Guard(auth=auth))


def test_probes_and_docs_stay_open(client):
    assert call(client, "get", "/healthz").status_code == 200 and call(client, "get", "/readyz").status_code == 200
    assert required_role("GET", "/openapi.json") is None and required_role("GET", "/unknown") == "read"
    assert required_role("POST", "/events\n") == required_role("DELETE", "/recommend") == "write"


def test_auth_without_tokens_is_refused_at_start():
    with pytest.raises(ValueError, match="'RECSYS_WRITE_TOKEN' .*holds no token"):
        Authenticator.from_env(ENV, {"RECSYS_READ_TOKEN": "r" * 24, "RECSYS_ADMIN_TOKEN": "a" * 24})
    with pytest.raises(ValueError, match="shorter than 16"):
        Authenticator.from_env(ENV, {**TOKENS, "RECSYS_READ_TOKEN": "short"})


def test_auth_config_names_variables_never_tokens():
    from recsys.config import ConfigError, load_config

    cfg = load_config("configs/demo.yaml", ["serve.auth.enabled=true"])
    assert cfg.serve.auth.token_env["write"] == "RECSYS_WRITE_TOKEN"
    with pytest.raises(ConfigError, match="token_env"):
        load_config("configs/demo.yaml", ["serve.auth.token_env={read: A}"])
