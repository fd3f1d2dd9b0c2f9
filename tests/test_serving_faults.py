"""Server faults: a burst beyond the queue, a client gone mid-stream, a slow reader; healthy after each.

(test_serving_load.py checks that a closed stream stops its generation; test_app.py that one request
over a full queue is a 503; here: what the server is like afterwards.)
"""

import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from ragtune.serving.app import create_app

Q = {"question": "What does the Zorblat Pro plan cost?", "mode": "base"}


def wait_for(cond, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def healthy(client, scheduler) -> None:
    wait_for(lambda: scheduler.depth == 0)
    assert client.get("/healthz").status_code == 200 and client.get("/readyz").status_code == 200
    r = client.post("/v1/answer", json={**Q, "max_new_tokens": 2})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] >= 1


def test_a_burst_beyond_the_queue_gets_503_with_retry_after_then_the_server_is_healthy(serving_pipeline):
    app = create_app(serving_pipeline({"max_queue": 3}))
    client, scheduler = TestClient(app), app.state.scheduler
    gate = threading.Event()
    held = scheduler.call(gate.wait)  # the model thread is busy: the burst piles up
    wait_for(held.running)
    codes: list[tuple[int, str | None]] = []

    def ask() -> None:
        r = client.post("/v1/answer", json={**Q, "max_new_tokens": 1})
        codes.append((r.status_code, r.headers.get("retry-after")))

    burst = [threading.Thread(target=ask) for _ in range(10)]
    for t in burst:
        t.start()
    wait_for(lambda: len(codes) >= 7)  # the refusals come at once, while the model thread is still held
    refused = list(codes)
    gate.set()
    for t in burst:
        t.join(timeout=120)
    assert all(c == 503 and ra == "1" for c, ra in refused), refused
    assert sorted(c for c, _ in codes) == [200] * 3 + [503] * 7
    healthy(client, scheduler)


@pytest.fixture(scope="module")
def live(serving_pipeline, live_server):
    app = create_app(serving_pipeline({"max_new_tokens_cap": 64}))
    with live_server(app) as url:
        yield url, app.state.scheduler


def test_a_client_gone_mid_stream_frees_its_slot(live):
    url, scheduler = live
    body = {**Q, "max_new_tokens": 64, "ignore_eos": True, "stream": True}
    for _ in range(3):  # more times than one slot could absorb if it leaked
        with httpx.Client(timeout=60) as c, c.stream("POST", f"{url}/v1/answer", json=body) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if line.startswith("event: token"):
                    break
    with httpx.Client(base_url=url, timeout=60) as c:
        healthy(c, scheduler)


def test_a_slow_reader_does_not_hold_up_others(live):
    url, scheduler = live
    body = {**Q, "max_new_tokens": 12, "ignore_eos": True, "stream": True}
    events: list[str] = []
    with httpx.Client(timeout=300) as slow, slow.stream("POST", f"{url}/v1/answer", json=body) as r:
        lines = r.iter_lines()
        events.append(next(lines))
        with httpx.Client(base_url=url, timeout=300) as other:  # meanwhile, another client is served
            assert other.post("/v1/answer", json={**Q, "max_new_tokens": 2}).status_code == 200
        for line in lines:
            events.append(line)
            time.sleep(0.05)  # read slower than tokens are made
    assert any(e.startswith("event: done") for e in events), events[-5:]
    with httpx.Client(base_url=url, timeout=60) as c:
        healthy(c, scheduler)
