"""Error bodies: the OpenAI shape `{error: {message, type, code, param}}` on the OpenAI-compatible
routes, ragtune's own `{error: {code, message}}` everywhere else."""

from __future__ import annotations

import threading

import pytest
from fastapi.testclient import TestClient

from ragtune.core.config import load_config
from ragtune.serving.app import create_app
from ragtune.serving.pipeline import Pipeline
from ragtune.serving.scheduler import Job

KEY = "r" * 20
CHAT = {"model": "ragtune-base", "messages": [{"role": "user", "content": "Hi?"}], "max_tokens": 1}


@pytest.fixture(scope="module")
def make_app(generator, tmp_path_factory):
    ws = tmp_path_factory.mktemp("errors-ws")

    def make(**serving):
        cfg = load_config(workspace=ws, environ={}, overrides={"serving": {"max_body_bytes": 2048, **serving}})
        return create_app(Pipeline(cfg, generator))

    return make


@pytest.fixture(scope="module")
def client(make_app):
    return TestClient(make_app())


def openai_error(r, status: int, type_: str, code: str, param: str | None = None) -> str:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "code", "param"}, err
    assert (err["type"], err["code"], err["param"]) == (type_, code, param), err
    assert err["message"]
    return str(err["message"])


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({**CHAT, "messages": []}, "messages"),
        ({**CHAT, "max_tokens": 0}, "max_tokens"),
        ({**CHAT, "messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
        ({**CHAT, "messages": [{"role": "system", "content": "only a system turn"}]}, "messages"),
    ],
)
def test_validation_errors(client, body, param):
    openai_error(client.post("/v1/chat/completions", json=body), 422, "invalid_request_error", "invalid_request", param)


def test_bad_n_and_malformed_json(client):
    openai_error(
        client.post("/v1/chat/completions", json={**CHAT, "n": 3}), 400, "invalid_request_error", "invalid_request", "n"
    )
    r = client.post("/v1/chat/completions", content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["type"] == "invalid_request_error"


def test_unknown_model_is_404_naming_the_model_param(client):
    msg = openai_error(
        client.post("/v1/chat/completions", json={**CHAT, "model": "gpt-4"}),
        404,
        "invalid_request_error",
        "model_not_found",
        "model",
    )
    assert "gpt-4" in msg
    r = client.post("/v1/chat/completions", json={**CHAT, "model": "ragtune-ft:ghost"})
    openai_error(r, 404, "invalid_request_error", "model_not_found", "model")


def test_wrong_method_and_large_body(client):
    openai_error(client.get("/v1/chat/completions"), 405, "invalid_request_error", "method_not_allowed")
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 5000}]}
    openai_error(client.post("/v1/chat/completions", json=big), 413, "invalid_request_error", "payload_too_large")


def test_auth_errors(make_app):
    keyed = TestClient(make_app(api_keys=[{"key": KEY}]))
    for path in ("/v1/models", "/v1/chat/completions"):
        r = keyed.get(path) if path == "/v1/models" else keyed.post(path, json=CHAT)
        openai_error(r, 401, "authentication_error", "unauthorized")
    assert keyed.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    far = TestClient(make_app(), client=("10.1.2.3", 5000))
    msg = openai_error(far.get("/v1/models"), 403, "permission_error", "forbidden")
    assert "loopback" in msg
    limited = TestClient(make_app(rate_limit_per_minute=1))
    limited.get("/v1/models")
    r = limited.get("/v1/models")
    openai_error(r, 429, "rate_limit_error", "rate_limited")
    assert int(r.headers["retry-after"]) >= 1


def test_overload_is_503_with_retry_after(make_app):
    app = make_app(max_queue=1)
    scheduler = app.state.scheduler
    gate = threading.Event()
    held = scheduler.call(gate.wait)  # the model thread is busy: nothing drains the queue
    try:
        scheduler.submit(Job(prompt="x", adapter=None, max_new_tokens=1, deadline=0, timeout_s=1))
        r = TestClient(app).post("/v1/chat/completions", json=CHAT)
        openai_error(r, 503, "server_error", "overloaded")
        assert r.headers["retry-after"] == "1"
    finally:
        gate.set()
    held.result(timeout=30)
    scheduler.stop()


def test_ragtunes_own_routes_keep_their_error_shape(make_app, client):
    r = client.post("/v1/answer", json={"question": "q", "surprise": 1})
    assert r.status_code == 422 and set(r.json()["error"]) == {"code", "message"}
    assert set(client.get("/v1/nothing").json()["error"]) == {"code", "message"}
    r = TestClient(make_app(api_keys=[{"key": KEY}])).post("/v1/answer", json={"question": "q"})
    assert r.status_code == 401 and r.json() == {
        "error": {"code": "unauthorized", "message": "missing or unknown API key (Authorization: Bearer <key>)"}
    }


def test_openapi_documents_the_openai_error_shape(client):
    spec = client.get("/openapi.json").json()
    for path, method in (("/v1/chat/completions", "post"), ("/v1/models", "get")):
        ref = spec["paths"][path][method]["responses"]["404"]["content"]["application/json"]["schema"]["$ref"]
        assert ref.endswith("/OpenAIErrorResponse")
    assert set(spec["components"]["schemas"]["OpenAIErrorBody"]["properties"]) == {"message", "type", "code", "param"}
    answer = spec["paths"]["/v1/answer"]["post"]["responses"]["404"]["content"]["application/json"]["schema"]["$ref"]
    assert answer.endswith("/ErrorResponse")
