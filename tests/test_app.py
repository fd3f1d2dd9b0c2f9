import pytest
from fastapi.testclient import TestClient

from ragtune.serving.app import create_app


@pytest.fixture(scope="module")
def client(pipeline_factory):
    return TestClient(create_app(pipeline_factory()))


def test_healthz(client):
    body = client.get("/healthz").json()
    assert body["status"] == "ok" and body["index"]["documents"] == 4


def test_answer_returns_citations_snapshot_and_timings(client):
    r = client.post("/v1/answer", json={"question": "What does the Zorblat Pro plan cost?", "mode": "rag", "top_k": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["mode"] == "rag" and len(body["citations"]) == 2
    assert body["citations"][0]["doc_id"] == "zorblat-pricing"
    assert body["snapshot"] and body["timings"]["total_ms"] > 0 and body["usage"]["completion_tokens"] > 0


@pytest.mark.parametrize(
    ("payload", "status", "needle"),
    [
        ({"question": "q", "mode": "turbo"}, 422, "mode"),
        ({"question": ""}, 422, "question"),
        ({"question": "q", "top_k": 0}, 422, "top_k"),
        ({"question": "q", "mode": "ft", "adapter": "ghost"}, 404, "ghost"),
        ({"question": "q", "surprise": 1}, 422, "surprise"),
        ({"question": "x" * 2001, "mode": "base"}, 400, "longer than"),
    ],
)
def test_bad_requests_get_json_errors(client, payload, status, needle):
    r = client.post("/v1/answer", json=payload)
    assert r.status_code == status
    err = r.json()["error"]
    assert needle in err["message"] and err["code"]


def test_malformed_json_body(client):
    r = client.post("/v1/answer", content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "error" in r.json()
