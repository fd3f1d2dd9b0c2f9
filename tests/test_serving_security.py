"""API keys (read/admin scopes), loopback-only without keys, per-key rate limit."""

import pytest
from fastapi.testclient import TestClient

from ragtune.serving.app import create_app
from ragtune.serving.security import KeyRing, is_loopback

READ, ADMIN = "read-key-0123456789abcdef", "admin-key-0123456789abcdef"


@pytest.fixture(scope="module")
def app(serving_pipeline):
    keys = [{"key": READ, "scope": "read", "name": "reader"}, {"key": ADMIN, "scope": "admin", "name": "ops"}]
    return create_app(serving_pipeline({"api_keys": keys, "rate_limit_per_minute": 5}))


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_keys_and_scopes(app):
    c = TestClient(app)
    assert c.get("/v1/index").status_code == 401
    assert c.get("/v1/index", headers=auth("wrong-key-0123456789abcdef")).json()["error"]["code"] == "unauthorized"
    assert c.get("/v1/index", headers=auth(READ)).status_code == 200
    denied = c.put("/v1/documents/x", json={"text": "t"}, headers=auth(READ))
    assert denied.status_code == 403 and "admin" in denied.json()["error"]["message"]
    assert c.post("/v1/adapters/tiny:unload", headers=auth(READ)).status_code == 403
    assert c.post("/v1/adapters/tiny:load", headers=auth(ADMIN)).status_code == 200
    assert c.get("/healthz").status_code == 200  # probes stay open


def test_rate_limit_per_key(app):
    c = TestClient(app)
    codes = [c.get("/v1/models", headers=auth(ADMIN)).status_code for _ in range(6)]
    assert codes[-1] == 429 and codes.count(200) >= 1
    r = c.get("/v1/models", headers=auth(ADMIN))
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1 and r.json()["error"]["code"] == "rate_limited"


def test_without_keys_only_loopback_clients(serving_pipeline):
    app = create_app(serving_pipeline())
    assert TestClient(app, client=("127.0.0.1", 5000)).get("/v1/index").status_code == 200
    far = TestClient(app, client=("10.1.2.3", 5000)).get("/v1/index")
    assert far.status_code == 403 and "loopback" in far.json()["error"]["message"]


def test_key_lookup_and_loopback_helpers(serving_pipeline):
    ring = KeyRing(serving_pipeline({"api_keys": [{"key": ADMIN, "scope": "admin"}]}).config.serving)
    assert ring.identify(ADMIN) is not None and ring.identify(ADMIN[:-1]) is None and ring.identify(None) is None
    assert is_loopback("127.0.0.1") and is_loopback("::1") and not is_loopback("192.168.1.4")


def test_keys_come_from_the_environment_too(tmp_path):
    from ragtune.core.config import load_config

    env = {"RAGTUNE_SERVING__API_KEYS": f"[{{key: {ADMIN}, scope: admin, name: ops}}]"}
    ring = KeyRing(load_config(workspace=tmp_path, environ=env).serving)
    assert not ring.open and ring.identify(ADMIN).name == "ops" and ring.identify(READ) is None
