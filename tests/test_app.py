import json
import threading

import pytest
from fastapi.testclient import TestClient

from ragtune.serving.app import create_app
from ragtune.serving.scheduler import Job

Q = "What does the Zorblat Pro plan cost?"


@pytest.fixture(scope="module")
def client(serving_pipeline):
    return TestClient(create_app(serving_pipeline({"max_new_tokens_cap": 64, "max_body_bytes": 4096})))


def sse_events(text: str) -> list[tuple[str, dict]]:
    events, name = [], "message"
    for line in text.splitlines():
        if line.startswith("event:"):
            name = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            events.append((name, json.loads(line.split(":", 1)[1].strip())))
            name = "message"
    return events


def test_healthz_and_readyz(client):
    body = client.get("/healthz").json()
    assert body["status"] == "ok" and body["index"]["documents"] == 4
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"model": True, "scheduler": True, "index": True}


def test_answer_returns_citations_snapshot_timings_and_usage(client):
    r = client.post("/v1/answer", json={"question": Q, "mode": "rag", "top_k": 2, "max_new_tokens": 6})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["mode"] == "rag" and body["adapter"] is None and len(body["citations"]) == 2
    first = body["citations"][0]
    assert first["n"] == 1 and first["doc_id"] == "zorblat-pricing" and first["title"] == "Zorblat Pricing"
    assert body["snapshot"] == client.get("/v1/index").json()["snapshot"]
    t = body["timings"]
    assert 0 < t["retrieve_ms"] < t["ttft_ms"] <= t["total_ms"] and t["generate_ms"] > 0
    assert 0 < body["usage"]["completion_tokens"] <= 6 and body["usage"]["prompt_tokens"] > 20


def test_answer_names_adapter_for_tuned_modes(client):
    body = client.post("/v1/answer", json={"question": Q, "mode": "hybrid", "max_new_tokens": 4}).json()
    assert body["adapter"] == "tiny" and body["citations"] and body["snapshot"]


def test_stream_sends_tokens_then_the_answer(client):
    payload = {"question": Q, "mode": "rag", "top_k": 1, "max_new_tokens": 8, "stream": True}
    with client.stream("POST", "/v1/answer", json=payload) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r.read().decode())
    tokens = [e for n, e in events if n == "token"]
    done = [e for n, e in events if n == "done"]
    assert len(tokens) >= 2 and len(done) == 1 and events[-1][0] == "done"
    assert "".join(t["text"] for t in tokens).strip() == done[0]["answer"]
    assert done[0]["citations"][0]["doc_id"] == "zorblat-pricing" and done[0]["timings"]["ttft_ms"] > 0


def test_filters_restrict_retrieval(client):
    r = client.post(
        "/v1/answer",
        json={"question": Q, "mode": "rag", "max_new_tokens": 2, "filters": {"doc_id": "zorblat-hours"}},
    )
    assert r.status_code == 200, r.text
    assert [c["doc_id"] for c in r.json()["citations"]] == ["zorblat-hours"]


@pytest.mark.parametrize(
    ("payload", "status", "code", "needle"),
    [
        ({"question": "q", "mode": "turbo"}, 422, "invalid_request", "mode"),
        ({"question": ""}, 422, "invalid_request", "question"),
        ({"question": "q", "top_k": 0}, 422, "invalid_request", "top_k"),
        ({"question": "q", "top_k": 51}, 422, "invalid_request", "top_k"),
        ({"question": "q", "max_new_tokens": 65}, 422, "limit_exceeded", "at most 64"),
        ({"question": "q", "mode": "ft", "adapter": "ghost"}, 404, "not_found", "ghost"),
        ({"question": "q", "mode": "rag", "snapshot": "s99999-deadbeef"}, 404, "not_found", "s99999"),
        ({"question": "q", "mode": "base", "snapshot": "nope"}, 404, "not_found", "nope"),
        ({"question": "q", "surprise": 1}, 422, "invalid_request", "surprise"),
        ({"question": "x" * 2001, "mode": "base"}, 400, "bad_request", "longer than"),
        ({"question": "x" * 5000, "mode": "base"}, 413, "payload_too_large", "4096"),
    ],
)
def test_bad_requests_get_json_errors(client, payload, status, code, needle):
    r = client.post("/v1/answer", json=payload)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code and needle in err["message"]


def test_malformed_body_unknown_route_and_wrong_method(client):
    r = client.post("/v1/answer", content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
    assert client.get("/v1/nothing").json()["error"]["code"] == "not_found"
    assert client.get("/v1/answer").status_code == 405


def test_chunked_body_over_the_limit_is_413(client):
    def gen():
        for _ in range(10):
            yield b"x" * 1000

    r = client.post("/v1/answer", content=gen(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"


def test_full_queue_is_503_with_retry_after(serving_pipeline):
    app = create_app(serving_pipeline({"max_queue": 1}))
    scheduler = app.state.scheduler
    gate = threading.Event()
    held = scheduler.call(gate.wait)  # the model thread is busy: nothing drains the queue now
    try:
        scheduler.submit(Job(prompt="x", adapter=None, max_new_tokens=1, deadline=0, timeout_s=1))
        r = TestClient(app).post("/v1/answer", json={"question": Q, "mode": "base"})
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert r.json()["error"]["code"] == "overloaded"
    finally:
        gate.set()
    held.result(timeout=30)
    scheduler.stop()
    r = TestClient(app).post("/v1/answer", json={"question": Q, "mode": "base"})
    assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable"


def test_deadline_stops_a_long_generation_with_504(serving_pipeline):
    client = TestClient(create_app(serving_pipeline({"request_timeout_s": 0.5})))
    payload = {"question": Q, "mode": "base", "max_new_tokens": 400, "ignore_eos": True}
    r = client.post("/v1/answer", json=payload)
    assert r.status_code == 504 and r.json()["error"]["code"] == "deadline_exceeded"
    stats = client.app.state.scheduler.stats
    assert stats.tokens < 100  # the row stopped at its deadline, far short of 400


def test_metrics_count_requests_latency_and_tokens(client):
    client.post("/v1/answer", json={"question": Q, "mode": "base", "max_new_tokens": 3})
    client.post("/v1/answer", json={"question": "q", "mode": "turbo"})
    text = client.get("/metrics").text
    assert 'ragtune_requests_total{route="/v1/answer",status="200"}' in text
    assert 'ragtune_answer_seconds_count{mode="base"}' in text
    assert "ragtune_queue_depth" in text and "ragtune_generated_tokens_total" in text
    assert 'ragtune_errors_total{code="invalid_request"}' in text


def test_openapi_documents_every_route(client):
    paths = client.get("/openapi.json").json()["paths"]
    for p in (
        "/v1/answer",
        "/v1/chat/completions",
        "/v1/models",
        "/v1/documents/{doc_id}",
        "/v1/documents:batch",
        "/v1/index",
        "/v1/adapters",
        "/v1/adapters/{name}:load",
        "/healthz",
        "/readyz",
        "/metrics",
    ):
        assert p in paths, p
