"""Under load: concurrent requests share one batched generate; a client that leaves stops its row."""

import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from ragtune.serving.app import create_app

QUESTIONS = [
    "What does the Zorblat Pro plan cost?",
    "When does Zorblat support answer?",
    "Which colours does the Zorblat lamp ship in, and which one is the default colour?",
]


def wait_for(cond, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_concurrent_requests_are_batched_per_adapter_with_left_padding(serving_pipeline):
    pipeline = serving_pipeline()
    app = create_app(pipeline)
    client, scheduler = TestClient(app), app.state.scheduler
    gate = threading.Event()
    held = scheduler.call(gate.wait)  # occupy the model thread until every request waits for it
    bodies: dict[str, dict] = {}

    def ask(q: str, mode: str) -> None:
        r = client.post("/v1/answer", json={"question": q, "mode": mode, "top_k": 1, "max_new_tokens": 6})
        bodies[f"{mode}:{q}"] = r.json()

    jobs = [(q, "rag") for q in QUESTIONS] + [(QUESTIONS[0], "ft")]
    threads = [threading.Thread(target=ask, args=job) for job in jobs]
    for t in threads:
        t.start()
    wait_for(lambda: held.running() and scheduler.depth == len(jobs))
    gate.set()
    for t in threads:
        t.join()
    assert (scheduler.stats.batches, scheduler.stats.rows) == (2, 4)  # three rag rows in one call, ft alone
    for q in QUESTIONS:  # prompts of different lengths, left padded: each row reads as if alone
        alone = pipeline.answer(q, mode="rag", top_k=1, max_new_tokens=6)
        assert bodies[f"rag:{q}"]["answer"] == alone.answer
    assert bodies[f"ft:{QUESTIONS[0]}"]["adapter"] == "tiny"
    assert 'ragtune_batch_size_bucket{le="4.0"} 2.0' in client.get("/metrics").text


@pytest.fixture(scope="module")
def live(serving_pipeline, live_server):
    app = create_app(serving_pipeline({"max_new_tokens_cap": 400}))
    with live_server(app) as url:
        yield url, app.state.scheduler


LONG = {"question": QUESTIONS[0], "mode": "base", "max_new_tokens": 400, "ignore_eos": True}


def test_closing_a_stream_stops_its_generation(live):
    url, scheduler = live
    before = (scheduler.stats.batches, scheduler.stats.tokens)
    with httpx.Client(timeout=60) as c, c.stream("POST", f"{url}/v1/answer", json={**LONG, "stream": True}) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("event: token"):
                break  # leave after the first token
    wait_for(lambda: scheduler.stats.batches > before[0])
    assert scheduler.stats.tokens - before[1] < 200  # far short of the 400 asked for


def test_a_client_that_times_out_stops_its_generation(live):
    url, scheduler = live
    before = (scheduler.stats.batches, scheduler.stats.tokens)
    with pytest.raises(httpx.ReadTimeout), httpx.Client(timeout=1.5) as c:
        c.post(f"{url}/v1/answer", json=LONG)
    wait_for(lambda: scheduler.stats.batches > before[0])
    assert scheduler.stats.tokens - before[1] < 200


def test_retrieval_generation_and_adapter_loads_run_on_the_one_model_thread(serving_pipeline):
    """Every torch call of a request happens on the scheduler's worker (see core/threads.py)."""
    pipeline = serving_pipeline()
    app = create_app(pipeline)
    client = TestClient(app)
    seen: list[int] = []

    def on_thread(fn):
        def spy(*args, **kwargs):
            seen.append(threading.get_ident())
            return fn(*args, **kwargs)

        return spy

    gen = pipeline.generator
    load = pipeline.load_adapter
    pipeline.prepare = on_thread(pipeline.prepare)  # type: ignore[method-assign]
    pipeline.load_adapter = on_thread(load)  # type: ignore[method-assign]
    gen.generate_rows = on_thread(gen.generate_rows)  # type: ignore[method-assign]
    gen.unload_adapter = on_thread(gen.unload_adapter)  # type: ignore[method-assign]
    try:
        r = client.post("/v1/answer", json={"question": QUESTIONS[0], "mode": "rag", "max_new_tokens": 3})
        assert r.status_code == 200
        assert seen == [app.state.scheduler._thread.ident] * 2
        load("tiny")  # so that unloading it has something to do
        seen.clear()
        assert client.post("/v1/adapters/tiny:unload").status_code == 200
        assert client.post("/v1/adapters/tiny:load").json()["loaded"] is True
        assert seen == [app.state.scheduler._thread.ident] * 2
    finally:
        del pipeline.prepare, pipeline.load_adapter, gen.generate_rows, gen.unload_adapter
        load("tiny")  # loaded again whatever happened above: later tests use it


def test_release_openmp_team_frees_the_calling_threads_workers():
    import os

    import torch

    from ragtune.core.threads import release_openmp_team

    if torch.get_num_threads() < 2:
        pytest.skip("one torch thread: OpenMP starts no worker threads to free")
    counts: list[int] = []
    released: list[bool] = []

    def work() -> None:
        a = torch.randn(512, 512)
        for _ in range(5):
            a = torch.tanh(a @ a)  # a parallel region: this thread now leads a team of workers
        counts.append(len(os.listdir("/proc/self/task")))
        released.append(release_openmp_team())
        counts.append(len(os.listdir("/proc/self/task")))

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert released == [True]
    assert counts[1] < counts[0]
